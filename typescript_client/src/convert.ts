/**
 * LangGraph.js objects to requests, and responses to LangGraph.js objects; no I/O.
 */
import { create } from "@bufbuild/protobuf";
import type { RunnableConfig } from "@langchain/core/runnables";
import {
  WRITES_IDX_MAP,
  type ChannelVersions,
  type Checkpoint,
  type CheckpointMetadata,
  type CheckpointPendingWrite,
  type CheckpointTuple,
  type DeltaChannelHistory,
  type PendingWrite,
  type SerializerProtocol,
} from "@langchain/langgraph-checkpoint";
import { randomBytes } from "node:crypto";
import {
  type Checkpoint as CheckpointMessage,
  type Payload,
  type PendingWrite as PendingWriteMessage,
  ChannelValueSchema,
  PayloadSchema,
  PendingWriteSchema,
} from "./gen/lgcheckpoint/v1/checkpoint_pb.js";
import {
  type GetDeltaChannelHistoryResponse,
  type GetCheckpointRequest,
  type ListCheckpointsRequest,
  type PutCheckpointRequest,
  type PutWritesRequest,
  GetCheckpointRequestSchema,
  GetDeltaChannelHistoryRequestSchema,
  type GetDeltaChannelHistoryRequest,
  ListCheckpointsRequestSchema,
  PutCheckpointRequestSchema,
  PutWritesRequestSchema,
} from "./gen/lgcheckpoint/v1/checkpoint_service_pb.js";

/** Checkpoints per ListCheckpoints page when reading a whole listing, as in Python. */
export const LIST_PAGE = 500;
// LangGraph records its delta channels' progress under this metadata key.
const DELTA_COUNTERS = "counters_since_delta_snapshot";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A JSON object as the UTF-8 bytes the service stores, or empty for none. */
export function jsonBytes(value: Record<string, unknown> | undefined): Uint8Array {
  return value && Object.keys(value).length > 0 ? encoder.encode(JSON.stringify(value)) : new Uint8Array();
}

/** Stored JSON bytes back as an object (`{}` when empty). */
export function parseJson(bytes: Uint8Array): Record<string, unknown> {
  return bytes.length > 0 ? (JSON.parse(decoder.decode(bytes)) as Record<string, unknown>) : {};
}

/** The page size to list `limit` checkpoints with (undefined: all). */
export function pageSize(limit: number | undefined): number {
  return limit === undefined ? LIST_PAGE : Math.max(1, Math.min(limit, LIST_PAGE));
}

/**
 * The version after `current`, in exactly the form the Python client mints: the integer
 * part zero-padded to 16 digits so that versions compare as strings, then 48 random bits
 * in 12 hex digits so that two branches forked from one checkpoint never mint the same
 * version of a channel. A thread written from both languages keeps one order.
 */
export function nextVersion(current: string | number | undefined): string {
  let integer = 0;
  if (typeof current === "number") integer = Math.trunc(current);
  else if (typeof current === "string") integer = Number.parseInt(current.split(".")[0] ?? "0", 10) || 0;
  return `${String(integer + 1).padStart(16, "0")}.${randomBytes(6).toString("hex")}`;
}

/** A channel version as LangGraph gave it: integers travel as their decimal digits. */
function version(value: string): string | number {
  return /^\d+$/.test(value) ? Number(value) : value;
}

function configurable(config: RunnableConfig): Record<string, unknown> {
  return (config.configurable ?? {}) as Record<string, unknown>;
}

function required(config: RunnableConfig, key: string, what: string): string {
  const value = configurable(config)[key];
  if (value === undefined || value === null || value === "") {
    throw new TypeError(`${what}: the config is missing configurable.${key}`);
  }
  return String(value);
}

/** Builds requests and reads responses with one serializer and one namespace. */
export class Mapper {
  constructor(
    readonly serde: SerializerProtocol,
    readonly namespace: string,
  ) {}

  private async payload(value: unknown): Promise<Payload> {
    const [type, data] = await this.serde.dumpsTyped(value);
    return create(PayloadSchema, { type, data });
  }

  private load(payload: Payload | undefined): Promise<unknown> {
    return this.serde.loadsTyped(payload?.type ?? "", payload?.data ?? new Uint8Array());
  }

  /** The request storing a checkpoint, and the config that points at it. */
  async putCheckpoint(
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    newVersions: ChannelVersions,
  ): Promise<[PutCheckpointRequest, RunnableConfig]> {
    const threadId = required(config, "thread_id", "put");
    const checkpointNs = String(configurable(config).checkpoint_ns ?? "");
    // Values travel one by one and versions in the clear (the server needs them to find
    // the values), so the serialized body carries neither.
    const { channel_values: values, channel_versions: versions, ...body } = checkpoint;
    const stored = metadata as Record<string, unknown>;
    const newValues = await Promise.all(
      Object.entries(newVersions)
        .filter(([channel]) => Object.prototype.hasOwnProperty.call(values, channel))
        .map(async ([channel, v]) =>
          create(ChannelValueSchema, {
            channel,
            version: String(v),
            value: await this.payload((values as Record<string, unknown>)[channel]),
          }),
        ),
    );
    const counters = stored[DELTA_COUNTERS] as Record<string, unknown> | undefined;
    const request = create(PutCheckpointRequestSchema, {
      namespace: this.namespace,
      threadId,
      checkpointNs,
      checkpointId: checkpoint.id,
      parentCheckpointId: String(configurable(config).checkpoint_id ?? ""),
      checkpoint: await this.payload(body),
      metadataJson: encoder.encode(JSON.stringify(stored)),
      channelVersions: Object.fromEntries(Object.entries(versions).map(([k, v]) => [k, String(v)])),
      newValues,
      runId: String(stored.run_id ?? configurable(config).run_id ?? ""),
      deltaChannels: Object.keys(counters ?? {}).sort(),
    });
    const next: RunnableConfig = {
      configurable: { thread_id: threadId, checkpoint_ns: checkpointNs, checkpoint_id: checkpoint.id },
    };
    return [request, next];
  }

  /** The request storing a task's writes; special channels get their negative index. */
  async putWrites(
    config: RunnableConfig,
    writes: PendingWrite[],
    taskId: string,
    taskPath: string,
  ): Promise<PutWritesRequest> {
    const messages = await Promise.all(
      writes.map(async ([channel, value], idx) =>
        create(PendingWriteSchema, {
          taskId,
          taskPath,
          idx: WRITES_IDX_MAP[channel] ?? idx,
          channel,
          value: await this.payload(value),
        }),
      ),
    );
    return create(PutWritesRequestSchema, {
      namespace: this.namespace,
      threadId: required(config, "thread_id", "putWrites"),
      checkpointNs: String(configurable(config).checkpoint_ns ?? ""),
      checkpointId: required(config, "checkpoint_id", "putWrites"),
      writes: messages,
    });
  }

  /** The request reading the checkpoint `config` points at (or the latest). */
  getCheckpoint(config: RunnableConfig): GetCheckpointRequest {
    return create(GetCheckpointRequestSchema, {
      namespace: this.namespace,
      threadId: required(config, "thread_id", "getTuple"),
      checkpointNs: String(configurable(config).checkpoint_ns ?? ""),
      checkpointId: String(configurable(config).checkpoint_id ?? ""),
    });
  }

  /** The request for the first page of a listing. */
  listCheckpoints(
    config: RunnableConfig | undefined,
    filter: Record<string, unknown> | undefined,
    before: RunnableConfig | undefined,
    limit: number | undefined,
  ): ListCheckpointsRequest {
    const request = create(ListCheckpointsRequestSchema, {
      namespace: this.namespace,
      metadataFilterJson: jsonBytes(filter),
      beforeCheckpointId: before ? String(configurable(before).checkpoint_id ?? "") : "",
      pageSize: pageSize(limit),
    });
    const fields = config ? configurable(config) : {};
    if (fields.thread_id !== undefined && fields.thread_id !== null) request.threadId = String(fields.thread_id);
    if (fields.checkpoint_ns !== undefined && fields.checkpoint_ns !== null) {
      request.checkpointNs = String(fields.checkpoint_ns);
    }
    request.checkpointId = String(fields.checkpoint_id ?? "");
    return request;
  }

  /** A stored checkpoint as LangGraph.js's tuple. */
  async checkpointTuple(message: CheckpointMessage): Promise<CheckpointTuple> {
    const checkpoint = (await this.load(message.checkpoint)) as Checkpoint;
    checkpoint.channel_versions = Object.fromEntries(
      Object.entries(message.channelVersions).map(([channel, v]) => [channel, version(v)]),
    );
    const values: Record<string, unknown> = {};
    for (const stored of message.channelValues) values[stored.channel] = await this.load(stored.value);
    checkpoint.channel_values = values;
    const ids = { thread_id: message.threadId, checkpoint_ns: message.checkpointNs };
    const tuple: CheckpointTuple = {
      config: { configurable: { ...ids, checkpoint_id: message.checkpointId } },
      checkpoint,
      metadata: parseJson(message.metadataJson) as CheckpointMetadata,
      pendingWrites: await this.pendingWrites(message.pendingWrites),
    };
    if (message.parentCheckpointId) {
      tuple.parentConfig = { configurable: { ...ids, checkpoint_id: message.parentCheckpointId } };
    }
    return tuple;
  }

  private pendingWrites(writes: PendingWriteMessage[]): Promise<CheckpointPendingWrite[]> {
    // The server returns them ordered by (task_path, task_id, idx), as LangGraph applies them.
    return Promise.all(
      writes.map(async (w): Promise<CheckpointPendingWrite> => [w.taskId, w.channel, await this.load(w.value)]),
    );
  }

  /** The request walking the parent chain for `channels`. */
  deltaChannelHistory(config: RunnableConfig, channels: string[]): GetDeltaChannelHistoryRequest {
    return create(GetDeltaChannelHistoryRequestSchema, {
      namespace: this.namespace,
      threadId: required(config, "thread_id", "getDeltaChannelHistory"),
      checkpointNs: String(configurable(config).checkpoint_ns ?? ""),
      checkpointId: String(configurable(config).checkpoint_id ?? ""),
      channels,
    });
  }

  /** The response as LangGraph.js's per-channel record. */
  async deltaHistories(response: GetDeltaChannelHistoryResponse): Promise<Record<string, DeltaChannelHistory>> {
    const result: Record<string, DeltaChannelHistory> = {};
    for (const history of response.histories) {
      const entry: DeltaChannelHistory = { writes: await this.pendingWrites(history.writes) };
      if (history.seed !== undefined) entry.seed = await this.load(history.seed);
      result[history.channel] = entry;
    }
    return result;
  }
}
