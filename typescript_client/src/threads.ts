/**
 * The thread catalog and the change feed of a GrpcSaver's namespace (`saver.threads`).
 *
 * Methods are named as in the Python client's `ThreadsClient` and langgraph-sdk's JS
 * `ThreadsClient`; returned objects use the snake_case fields both of them return.
 */
import { create } from "@bufbuild/protobuf";
import { type Duration, type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { CheckpointTuple } from "@langchain/langgraph-checkpoint";
import { CheckpointView, ListCheckpointsRequestSchema } from "./gen/lgcheckpoint/v1/checkpoint_service_pb.js";
import {
  type Event as EventMessage,
  type Thread as ThreadMessage,
  EventKind,
  ThreadStatus,
  ThreadTtlSchema,
  TtlStrategy,
} from "./gen/lgcheckpoint/v1/thread_pb.js";
import {
  type ThreadFilter,
  IfExists,
  SortOrder,
  ThreadFilterSchema,
  ThreadSortBy,
  ThreadView,
} from "./gen/lgcheckpoint/v1/thread_service_pb.js";
import { jsonBytes, pageSize, parseJson } from "./convert.js";
import { GrpcSaverError, rpcError } from "./errors.js";
import type { GrpcSaver, PruneStrategyName } from "./saver.js";

/** A thread's status: `interrupted` has a pending `interrupt()`, `error` a failed task. */
export type Status = "idle" | "busy" | "interrupted" | "error";
/** What a thread's time to live does when it runs out. */
export type TtlStrategyName = "delete" | "keep_latest";
/** What `search` sorts by. */
export type SortBy = "thread_id" | "created_at" | "updated_at";
/** What happened to a thread. */
export type EventKindName =
  | "checkpoint_added"
  | "writes_added"
  | "thread_created"
  | "thread_updated"
  | "thread_deleted"
  | "thread_pruned"
  | "thread_copied";

/** A thread of the catalog. */
export interface Thread {
  thread_id: string;
  /** The thread's own metadata (not its checkpoints'). */
  metadata: Record<string, unknown>;
  created_at: Date;
  /** When a checkpoint, write or the thread itself was last stored. */
  updated_at: Date;
  status: Status;
  /** The latest checkpoint of the root graph, if any. */
  latest_checkpoint_id: string | undefined;
  /** Checkpoints held, in every checkpoint_ns (full view only). */
  checkpoint_count: number | undefined;
  /** Bytes of channel values stored (full view only). */
  values_bytes: number | undefined;
  /** Bytes of pending writes stored (full view only). */
  writes_bytes: number | undefined;
  /** The thread's own time to live in seconds, if it has one. */
  ttl_seconds: number | undefined;
  ttl_strategy: TtlStrategyName | undefined;
  /** When the time to live in force runs out, if any. */
  expires_at: Date | undefined;
}

/** Something that happened to a thread, from `watch`. */
export interface Event {
  /** Pass as `after` to resume right after this event. */
  cursor: string;
  kind: EventKindName;
  thread_id: string;
  /** For checkpoint and write events, the sub-graph namespace. */
  checkpoint_ns: string | undefined;
  /** For checkpoint and write events, the checkpoint. */
  checkpoint_id: string | undefined;
  /** For `thread_copied`, the thread copied from. */
  source_thread_id: string | undefined;
  /** When it was committed. */
  time: Date;
}

/** One page of a search; `next_page_token` is undefined at the end. */
export interface ThreadPage {
  threads: Thread[];
  next_page_token: string | undefined;
}

/** Filters of `search` and `count`; a thread must match every one given. */
export interface ThreadFilterOptions {
  /** Top-level keys of the thread's metadata with exactly these JSON values. */
  metadata?: Record<string, unknown>;
  status?: Status;
  createdAfter?: Date;
  createdBefore?: Date;
  updatedAfter?: Date;
  updatedBefore?: Date;
}

/** A time to live for `create` and `update`. */
export interface TtlOptions {
  ttlSeconds?: number;
  /** Default `"delete"`. */
  ttlStrategy?: TtlStrategyName;
}

const STATUS: Record<ThreadStatus, Status> = {
  [ThreadStatus.UNSPECIFIED]: "idle",
  [ThreadStatus.IDLE]: "idle",
  [ThreadStatus.BUSY]: "busy",
  [ThreadStatus.INTERRUPTED]: "interrupted",
  [ThreadStatus.ERROR]: "error",
};
const STATUS_VALUES: Record<Status, ThreadStatus> = {
  idle: ThreadStatus.IDLE,
  busy: ThreadStatus.BUSY,
  interrupted: ThreadStatus.INTERRUPTED,
  error: ThreadStatus.ERROR,
};
const STRATEGY: Partial<Record<TtlStrategy, TtlStrategyName>> = {
  [TtlStrategy.DELETE]: "delete",
  [TtlStrategy.KEEP_LATEST]: "keep_latest",
};
const STRATEGY_VALUES: Record<TtlStrategyName, TtlStrategy> = {
  delete: TtlStrategy.DELETE,
  keep_latest: TtlStrategy.KEEP_LATEST,
};
const SORT: Record<SortBy, ThreadSortBy> = {
  thread_id: ThreadSortBy.THREAD_ID,
  created_at: ThreadSortBy.CREATE_TIME,
  updated_at: ThreadSortBy.UPDATE_TIME,
};
const KINDS: Partial<Record<EventKind, EventKindName>> = {
  [EventKind.CHECKPOINT_ADDED]: "checkpoint_added",
  [EventKind.WRITES_ADDED]: "writes_added",
  [EventKind.THREAD_CREATED]: "thread_created",
  [EventKind.THREAD_UPDATED]: "thread_updated",
  [EventKind.THREAD_DELETED]: "thread_deleted",
  [EventKind.THREAD_PRUNED]: "thread_pruned",
  [EventKind.THREAD_COPIED]: "thread_copied",
};

// Reconnecting a watch after UNAVAILABLE (a server restarting, a replica going away).
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 2000;

function date(timestamp: Timestamp | undefined): Date {
  return timestamp ? timestampDate(timestamp) : new Date(0);
}

function seconds(duration: Duration | undefined): number | undefined {
  return duration ? Number(duration.seconds) + duration.nanos / 1e9 : undefined;
}

function thread(message: ThreadMessage | undefined, full: boolean): Thread {
  if (message === undefined) throw new GrpcSaverError(Code.Internal, "the server returned no thread");
  return {
    thread_id: message.threadId,
    metadata: parseJson(message.metadataJson),
    created_at: date(message.createTime),
    updated_at: date(message.updateTime),
    status: STATUS[message.status] ?? "idle",
    latest_checkpoint_id: message.latestCheckpointId || undefined,
    checkpoint_count: full ? Number(message.checkpointCount) : undefined,
    values_bytes: full ? Number(message.valuesBytes) : undefined,
    writes_bytes: full ? Number(message.writesBytes) : undefined,
    ttl_seconds: seconds(message.ttl?.ttl),
    ttl_strategy: message.ttl ? STRATEGY[message.ttl.strategy] : undefined,
    expires_at: message.expireTime ? timestampDate(message.expireTime) : undefined,
  };
}

function event(message: EventMessage | undefined): Event {
  if (message === undefined) throw new GrpcSaverError(Code.Internal, "the server sent an empty event");
  const kind = KINDS[message.kind];
  if (kind === undefined) throw new GrpcSaverError(Code.Internal, `unknown event kind ${message.kind}`);
  return {
    cursor: message.cursor,
    kind,
    thread_id: message.threadId,
    checkpoint_ns: message.checkpointId ? message.checkpointNs : undefined,
    checkpoint_id: message.checkpointId || undefined,
    source_thread_id: message.sourceThreadId || undefined,
    time: date(message.time),
  };
}

function ttl(options: TtlOptions) {
  if (options.ttlSeconds === undefined) return undefined;
  const whole = Math.floor(options.ttlSeconds);
  return create(ThreadTtlSchema, {
    ttl: { seconds: BigInt(whole), nanos: Math.round((options.ttlSeconds - whole) * 1e9) },
    strategy: STRATEGY_VALUES[options.ttlStrategy ?? "delete"],
  });
}

function filter(options: ThreadFilterOptions): ThreadFilter {
  const which = create(ThreadFilterSchema, { metadataFilterJson: jsonBytes(options.metadata) });
  if (options.status !== undefined) which.status = STATUS_VALUES[options.status];
  if (options.createdAfter) which.createdAfter = timestampFromDate(options.createdAfter);
  if (options.createdBefore) which.createdBefore = timestampFromDate(options.createdBefore);
  if (options.updatedAfter) which.updatedAfter = timestampFromDate(options.updatedAfter);
  if (options.updatedBefore) which.updatedBefore = timestampFromDate(options.updatedBefore);
  return which;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The thread catalog of a GrpcSaver's namespace; reach it as `saver.threads`. */
export class ThreadsClient {
  constructor(private readonly saver: GrpcSaver) {}

  private get namespace(): string {
    return this.saver.namespace;
  }

  /**
   * Creates a thread (a random UUID when `threadId` is omitted) and returns it.
   *
   * @throws GrpcSaverError ALREADY_EXISTS when it exists and `ifExists` is `"raise"`.
   */
  async create(
    threadId?: string,
    options: TtlOptions & { metadata?: Record<string, unknown>; ifExists?: "raise" | "do_nothing" } = {},
  ): Promise<Thread> {
    const request = {
      namespace: this.namespace,
      threadId: threadId ?? "",
      metadataJson: jsonBytes(options.metadata),
      ttl: ttl(options),
      ifExists: options.ifExists === "do_nothing" ? IfExists.DO_NOTHING : IfExists.RAISE,
    };
    const response = await this.saver.call((o) => this.saver.threadService.createThread(request, o));
    return thread(response.thread, false);
  }

  /**
   * A thread, with its counts unless `full` is false.
   *
   * @throws GrpcSaverError NOT_FOUND when it does not exist.
   */
  async get(threadId: string, options: { full?: boolean } = {}): Promise<Thread> {
    const full = options.full ?? true;
    const request = { namespace: this.namespace, threadId, view: full ? ThreadView.FULL : ThreadView.BASIC };
    const response = await this.saver.call((o) => this.saver.threadService.getThread(request, o));
    return thread(response.thread, full);
  }

  /** Merges `metadata` into the thread's and sets (or clears) its time to live. */
  async update(
    threadId: string,
    options: TtlOptions & { metadata?: Record<string, unknown>; clearTtl?: boolean } = {},
  ): Promise<Thread> {
    const request = {
      namespace: this.namespace,
      threadId,
      metadataJson: jsonBytes(options.metadata),
      ttl: ttl(options),
      clearTtl: options.clearTtl ?? false,
    };
    const response = await this.saver.call((o) => this.saver.threadService.updateThread(request, o));
    return thread(response.thread, false);
  }

  /** Deletes the thread with everything stored for it. */
  delete(threadId: string): Promise<void> {
    return this.saver.deleteThread(threadId);
  }

  /**
   * One page of the threads matching every filter given, most recently updated first by
   * default. Pass the returned `next_page_token` as `pageToken` for the next page.
   */
  async search(
    options: ThreadFilterOptions & {
      sortBy?: SortBy;
      sortOrder?: "asc" | "desc";
      limit?: number;
      pageToken?: string;
      full?: boolean;
    } = {},
  ): Promise<ThreadPage> {
    const full = options.full ?? false;
    const request = {
      namespace: this.namespace,
      filter: filter(options),
      sortBy: SORT[options.sortBy ?? "updated_at"],
      sortOrder: options.sortOrder === "asc" ? SortOrder.ASCENDING : SortOrder.DESCENDING,
      pageSize: options.limit ?? 10,
      pageToken: options.pageToken ?? "",
      view: full ? ThreadView.FULL : ThreadView.BASIC,
    };
    const response = await this.saver.call((o) => this.saver.threadService.searchThreads(request, o));
    return {
      threads: response.threads.map((t) => thread(t, full)),
      next_page_token: response.nextPageToken || undefined,
    };
  }

  /** How many threads match every filter given. */
  async count(options: ThreadFilterOptions = {}): Promise<number> {
    const request = { namespace: this.namespace, filter: filter(options) };
    const response = await this.saver.call((o) => this.saver.threadService.countThreads(request, o));
    return Number(response.count);
  }

  /**
   * A thread's checkpoints, newest first, as LangGraph.js's tuples.
   *
   * `values: false` leaves channel values out (and keeps only the special pending writes:
   * errors, interrupts, resumes), so a long history reads fast.
   */
  history(
    threadId: string,
    options: { checkpointNs?: string; values?: boolean; channels?: string[]; before?: string; limit?: number } = {},
  ): AsyncGenerator<CheckpointTuple> {
    const request = create(ListCheckpointsRequestSchema, {
      namespace: this.namespace,
      threadId,
      checkpointNs: options.checkpointNs ?? "",
      beforeCheckpointId: options.before ?? "",
      pageSize: pageSize(options.limit),
      view: options.values === false ? CheckpointView.METADATA : CheckpointView.FULL,
      channels: options.channels ?? [],
    });
    return this.saver.pages(request, options.limit);
  }

  /**
   * Events of a thread (or of the whole namespace) as they are committed, until `signal`
   * aborts or the caller stops iterating.
   *
   * When the connection drops (UNAVAILABLE) the iterator reconnects by itself and resumes
   * after the last event it yielded: nothing missed, nothing twice.
   *
   * @param options.after Resume after the event with this cursor.
   * @param options.fromBeginning Without `after`, start at the oldest retained event.
   * @param options.reconnect Reconnect after UNAVAILABLE (default true).
   */
  async *watch(
    threadId?: string,
    options: { after?: string; fromBeginning?: boolean; reconnect?: boolean; signal?: AbortSignal } = {},
  ): AsyncGenerator<Event> {
    let after = options.after ?? "";
    let delay = RECONNECT_FIRST_MS;
    const reconnect = options.reconnect ?? true;
    while (!options.signal?.aborted) {
      const controller = new AbortController();
      const stop = () => controller.abort();
      options.signal?.addEventListener("abort", stop);
      try {
        const request = {
          namespace: this.namespace,
          threadId: threadId ?? "",
          afterCursor: after,
          fromBeginning: options.fromBeginning ?? false,
        };
        for await (const response of this.saver.threadService.watchEvents(request, { signal: controller.signal })) {
          const next = event(response.event);
          after = next.cursor;
          delay = RECONNECT_FIRST_MS;
          yield next;
        }
      } catch (error) {
        const failure = rpcError(error);
        if (options.signal?.aborted) return;
        if (!(reconnect && failure.code === Code.Unavailable)) throw failure;
      } finally {
        options.signal?.removeEventListener("abort", stop);
        controller.abort();
      }
      await sleep(delay, options.signal);
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
    }
  }

  /** Copies a thread with its whole history; returns the new thread's ID. */
  async copy(
    threadId: string,
    options: { targetThreadId?: string; metadata?: Record<string, unknown> } = {},
  ): Promise<string> {
    const request = {
      namespace: this.namespace,
      sourceThreadId: threadId,
      targetThreadId: options.targetThreadId ?? "",
      metadataJson: jsonBytes(options.metadata),
    };
    const response = await this.saver.call((o) => this.saver.checkpoints.copyThread(request, o));
    return response.targetThreadId;
  }

  /** Prunes threads: `"keep_latest"` (DeltaChannel-safe) or `"delete"`. */
  prune(threadIds: string[], options: { strategy?: PruneStrategyName } = {}): Promise<void> {
    return this.saver.prune(threadIds, options.strategy);
  }
}
