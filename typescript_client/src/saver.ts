import { type Client, Code, createClient } from "@connectrpc/connect";
import type { RunnableConfig } from "@langchain/core/runnables";
import {
  BaseCheckpointSaver,
  type ChannelVersions,
  type Checkpoint,
  type CheckpointListOptions,
  type CheckpointMetadata,
  type CheckpointTuple,
  type DeltaChannelHistory,
  type PendingWrite,
  type SerializerProtocol,
  TASKS,
  maxChannelVersion,
} from "@langchain/langgraph-checkpoint";
import { type Checkpoint as CheckpointMessage, PruneStrategy } from "./gen/lgcheckpoint/v1/checkpoint_pb.js";
import {
  CheckpointService,
  type BatchGetCheckpointsRequest,
  type BatchWriteRequest,
  type GetCheckpointRequest,
  type ListCheckpointsRequest,
  type ListCheckpointsResponse,
} from "./gen/lgcheckpoint/v1/checkpoint_service_pb.js";
import { ThreadService } from "./gen/lgcheckpoint/v1/thread_service_pb.js";
import { Batcher, type WriteItem, reads, writes } from "./batch.js";
import { Mapper, nextVersion } from "./convert.js";
import { GrpcSaverError, rpcError } from "./errors.js";
import { ThreadsClient } from "./threads.js";
import { type ConnectionOptions, DEFAULT_MAX_MESSAGE_BYTES, openTransport } from "./transport.js";

/** How a `GrpcSaver` is set up; every field is optional. */
export interface GrpcSaverOptions extends ConnectionOptions {
  /** The tenant scope of every call; empty means `"default"`. */
  namespace?: string;
  /** The serializer of values; LangGraph.js's `JsonPlusSerializer` when omitted. */
  serde?: SerializerProtocol;
  /** The deadline of each call in milliseconds (default 30,000). */
  timeoutMs?: number;
}

/** How `prune` shrinks a thread. */
export type PruneStrategyName = "keep_latest" | "delete";

const PRUNE: Record<PruneStrategyName, PruneStrategy> = {
  keep_latest: PruneStrategy.KEEP_LATEST,
  delete: PruneStrategy.DELETE,
};

export const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * A LangGraph.js checkpointer that stores checkpoints in the checkpoint service.
 *
 * Values are serialized on the client with `serde` and stored opaque; the default
 * `JsonPlusSerializer` writes JSON that the Python client's `JsonSerializer` reads, so
 * threads can be shared with Python agents. Call `close()` when done.
 *
 * @example
 * ```ts
 * const saver = new GrpcSaver("grpc://localhost:50051", { namespace: "team-a" });
 * const graph = builder.compile({ checkpointer: saver });
 * await graph.invoke(inputs, { configurable: { thread_id: "1" } });
 * saver.close();
 * ```
 */
export class GrpcSaver extends BaseCheckpointSaver {
  /** The address, as given. */
  readonly target: string;
  /** The tenant namespace of every call. */
  readonly namespace: string;
  /** The deadline of each call in milliseconds. */
  readonly timeoutMs: number;
  /** The typed stub of the CheckpointService, for the catalog and advanced callers. */
  readonly checkpoints: Client<typeof CheckpointService>;
  /** The typed stub of the ThreadService. */
  readonly threadService: Client<typeof ThreadService>;
  /** The thread catalog and change feed of this saver's namespace. */
  readonly threads: ThreadsClient;
  private readonly mapper: Mapper;
  private readonly writes: Batcher<WriteItem, void>;
  private readonly reads: Batcher<GetCheckpointRequest, CheckpointMessage | undefined>;
  private readonly closeTransport: () => void;

  constructor(target: string, options: GrpcSaverOptions = {}) {
    super(options.serde);
    this.target = target;
    this.namespace = options.namespace ?? "";
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const { transport, close } = openTransport(target, options);
    this.closeTransport = close;
    this.checkpoints = createClient(CheckpointService, transport);
    this.threadService = createClient(ThreadService, transport);
    this.mapper = new Mapper(this.serde, this.namespace);
    this.threads = new ThreadsClient(this);
    // A batch's items take at most half the message limit, as in the Python client.
    const batchBytes = (options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES) / 2;
    const writeCalls = {
      one: (item: WriteItem) =>
        item.case === "putCheckpoint"
          ? this.call((o) => this.checkpoints.putCheckpoint(item.value, o))
          : this.call((o) => this.checkpoints.putWrites(item.value, o)),
      batch: (request: BatchWriteRequest) => this.call((o) => this.checkpoints.batchWrite(request, o)),
    };
    this.writes = new Batcher(this.namespace, writes(writeCalls), batchBytes);
    const readCalls = {
      one: (request: GetCheckpointRequest) => this.call((o) => this.checkpoints.getCheckpoint(request, o)),
      batch: (request: BatchGetCheckpointsRequest) =>
        this.call((o) => this.checkpoints.batchGetCheckpoints(request, o)),
    };
    this.reads = new Batcher(this.namespace, reads(readCalls), batchBytes);
  }

  /** Closes the connection and any open watch; call it when the saver is no longer used. */
  close(): void {
    // The calls that wait to go in a batch fail with CANCELLED, as those on the wire do.
    this.writes.close();
    this.reads.close();
    this.closeTransport();
  }

  /** Runs one unary call with the saver's deadline, mapping failures to `GrpcSaverError`. */
  async call<T>(invoke: (options: { timeoutMs: number }) => Promise<T>): Promise<T> {
    try {
      return await invoke({ timeoutMs: this.timeoutMs });
    } catch (error) {
      throw rpcError(error);
    }
  }

  /** The checkpoint `config` points at, or the thread's latest; undefined if there is none. */
  async getTuple(config: RunnableConfig): Promise<CheckpointTuple | undefined> {
    // LangGraph.js asks for the latest checkpoint of no thread and expects nothing back.
    if (config.configurable?.thread_id === undefined) return undefined;
    const request = this.mapper.getCheckpoint(config);
    try {
      // Reads made while another is on the wire go together, as one BatchGetCheckpoints.
      const checkpoint = await this.reads.send(request);
      return checkpoint && (await this.migrated(await this.mapper.checkpointTuple(checkpoint)));
    } catch (error) {
      if (error instanceof GrpcSaverError && error.code === Code.NotFound) return undefined;
      throw error;
    }
  }

  /** Checkpoints newest first, a page fetched ahead while the caller reads this one. */
  async *list(config: RunnableConfig, options: CheckpointListOptions = {}): AsyncGenerator<CheckpointTuple> {
    const request = this.mapper.listCheckpoints(config, options.filter, options.before, options.limit);
    yield* this.pages(request, options.limit);
  }

  /** Every checkpoint a listing request selects, at most `limit`, newest first. */
  async *pages(request: ListCheckpointsRequest, limit: number | undefined): AsyncGenerator<CheckpointTuple> {
    let remaining = limit;
    const fetch = (page: ListCheckpointsRequest): Promise<ListCheckpointsResponse> =>
      this.call((o) => this.checkpoints.listCheckpoints(page, o));
    let pending: Promise<ListCheckpointsResponse> | undefined = fetch(request);
    try {
      while (pending !== undefined) {
        const response = await pending;
        pending = undefined;
        const wantsMore =
          response.nextPageToken !== "" && (remaining === undefined || remaining > response.checkpoints.length);
        if (wantsMore) {
          pending = fetch({ ...request, pageToken: response.nextPageToken });
        }
        for (const message of response.checkpoints.slice(0, remaining)) {
          yield await this.migrated(await this.mapper.checkpointTuple(message));
        }
        if (remaining !== undefined) remaining -= Math.min(remaining, response.checkpoints.length);
      }
    } finally {
      // A caller that stops early leaves the prefetched page unread; do not let it reject unseen.
      pending?.catch(() => undefined);
    }
  }

  /**
   * A checkpoint of format 3 or older with its pending sends moved into its `__pregel_tasks`
   * channel: they were once stored as writes of the parent, as LangGraph.js's own savers
   * migrate them on read. Only the parent's writes are fetched, not its values.
   */
  private async migrated(tuple: CheckpointTuple): Promise<CheckpointTuple> {
    const parentId = tuple.parentConfig?.configurable?.checkpoint_id as string | undefined;
    if (tuple.checkpoint.v >= 4 || parentId === undefined) return tuple;
    const request = this.mapper.listCheckpoints(tuple.parentConfig, undefined, undefined, 1);
    request.channels = [TASKS];
    let sends: unknown[] = [];
    for await (const parent of this.pages(request, 1)) {
      sends = (parent.pendingWrites ?? []).filter(([, channel]) => channel === TASKS).map(([, , value]) => value);
    }
    const checkpoint = tuple.checkpoint;
    checkpoint.channel_values[TASKS] = sends;
    const versions = Object.values(checkpoint.channel_versions);
    checkpoint.channel_versions[TASKS] =
      versions.length > 0 ? maxChannelVersion(...versions) : this.getNextVersion(undefined);
    return tuple;
  }

  /** Stores a checkpoint with the values of the channels in `newVersions`. */
  async put(
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    newVersions: ChannelVersions,
  ): Promise<RunnableConfig> {
    const [request, next] = await this.mapper.putCheckpoint(config, checkpoint, metadata, newVersions);
    await this.writes.send({ case: "putCheckpoint", value: request });
    return next;
  }

  /** Stores a task's pending writes against the checkpoint `config` points at. */
  async putWrites(config: RunnableConfig, writes: PendingWrite[], taskId: string, taskPath = ""): Promise<void> {
    // Writes may reach the server before the checkpoint puts ahead of them: the server keeps
    // the thread's status right in every order (server/src/checkpoint_server/storage/status.py).
    const request = await this.mapper.putWrites(config, writes, taskId, taskPath);
    await this.writes.send({ case: "putWrites", value: request });
  }

  /** Deletes a thread's checkpoints, writes and values in every checkpoint_ns. */
  async deleteThread(threadId: string): Promise<void> {
    const request = { namespace: this.namespace, threadId: String(threadId) };
    await this.call((o) => this.checkpoints.deleteThread(request, o));
  }

  /**
   * Deletes the checkpoints created by the given runs, with their writes. Over 1,000 runs take
   * several calls; if one fails, the calls before it took effect (calling again is safe).
   */
  async deleteForRuns(runIds: string[]): Promise<void> {
    for (const chunk of chunks(runIds.map(String))) {
      const request = { namespace: this.namespace, runIds: chunk };
      await this.call((o) => this.checkpoints.deleteForRuns(request, o));
    }
  }

  /** Copies a thread, its whole parent chain and its writes, to a new thread ID. */
  async copyThread(sourceThreadId: string, targetThreadId: string): Promise<void> {
    await this.threads.copy(sourceThreadId, { targetThreadId });
  }

  /**
   * Prunes threads: `"keep_latest"` (safe with DeltaChannel) or `"delete"`. Over 1,000 threads
   * take several calls; if one fails, the calls before it took effect (calling again is safe).
   */
  async prune(threadIds: string[], strategy: PruneStrategyName = "keep_latest"): Promise<void> {
    if (typeof threadIds === "string") throw new TypeError("threadIds must be an array of thread IDs, not a string");
    const value = PRUNE[strategy];
    if (value === undefined) throw new TypeError(`Unknown prune strategy: ${JSON.stringify(strategy)}`);
    for (const chunk of chunks(threadIds.map(String))) {
      const request = { namespace: this.namespace, threadIds: chunk, strategy: value };
      await this.call((o) => this.checkpoints.pruneThreads(request, o));
    }
  }

  /** Per channel, the writes along the parent chain and the nearest stored value. */
  override async getDeltaChannelHistory(options: {
    config: RunnableConfig;
    channels: string[];
  }): Promise<Record<string, DeltaChannelHistory>> {
    if (options.channels.length === 0) return {};
    const request = this.mapper.deltaChannelHistory(options.config, options.channels);
    const response = await this.call((o) => this.checkpoints.getDeltaChannelHistory(request, o));
    return this.mapper.deltaHistories(response);
  }

  /**
   * A version that sorts after `current`, in the Python client's form (see `nextVersion`).
   *
   * LangGraph.js types versions as numbers here, and `compile()` accepts only savers of
   * that type; at run time it compares versions with `compareChannelVersions`, which orders
   * strings as well, so string versions are what goes through.
   */
  override getNextVersion(current: number | undefined): number {
    return nextVersion(current as number | string | undefined) as unknown as number;
  }
}

// The most thread or run IDs one PruneThreads or DeleteForRuns takes: more go in several calls.
const MAX_IDS = 1000;

function chunks(ids: string[]): string[][] {
  const out: string[][] = [];
  for (let start = 0; start < ids.length; start += MAX_IDS) out.push(ids.slice(start, start + MAX_IDS));
  return out;
}
