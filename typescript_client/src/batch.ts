/**
 * Concurrent calls of one saver, sent together (BatchWrite, BatchGetCheckpoints).
 *
 * LangGraph.js stores a checkpoint while its tasks' writes are still being stored, and a saver
 * that many threads share stores and reads theirs at the same time; each unary call costs the
 * server far more than the rows it touches. So a call goes out at once, on its own, while fewer
 * than `MAX_IN_FLIGHT` calls of its kind are on the wire; one made meanwhile waits, and when a
 * call comes back everything that waits goes as one batch call. An idle saver adds no latency,
 * and a busy one sends fewer, larger calls (the server commits a batch of writes together).
 *
 * Each item succeeds or fails as its own call would: an item the server could not serve now
 * (`UNAVAILABLE`, or a read that did not fit in the batch's response) is sent again on its own,
 * with the saver's retries; a server without the batch RPC gets unary calls from then on. The
 * Python client's `_batch.py` does the same.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { Checkpoint } from "./gen/lgcheckpoint/v1/checkpoint_pb.js";
import {
  type BatchGetCheckpointsRequest,
  type BatchGetCheckpointsResponse,
  type BatchWriteItem,
  type BatchWriteRequest,
  type BatchWriteResponse,
  type GetCheckpointRequest,
  type GetCheckpointResponse,
  BatchGetCheckpointsRequestSchema,
  BatchWriteRequestSchema,
  GetCheckpointRequestSchema,
  PutCheckpointRequestSchema,
  PutWritesRequestSchema,
} from "./gen/lgcheckpoint/v1/checkpoint_service_pb.js";
import { GrpcSaverError } from "./errors.js";

/**
 * One call of a kind on the wire at a time: what LangGraph issues meanwhile (a step's writes
 * beside its checkpoint, other threads' steps) goes in the next call. The Python client measured
 * 1.8 calls per super-step with one thread at a time against 2.2 with two, at the same speed.
 */
export const MAX_IN_FLIGHT = 1;
/** Items per batch; the server takes up to 1000. */
export const MAX_ITEMS = 200;

/** What one item of a batch ended with: the status its own call would have had, and its value. */
export interface Result<Value> {
  readonly code: number;
  readonly message: string;
  readonly value: Value;
}

/**
 * How one kind of call travels, alone or in batches; both calls reject with `GrpcSaverError`.
 *
 * `writes` and `reads` make the two kinds from the saver's typed calls.
 */
export interface Kind<Item, Value> {
  /** The batch RPC, as messages name it. */
  readonly method: string;
  /** The encoded size of an item, to keep a batch within the message size limit. */
  size(item: Item): number;
  /** Makes the item's own unary call; resolves to what its caller gets. */
  one(item: Item): Promise<Value>;
  /** Makes one batch call of a namespace's items; resolves to their results, in order. */
  batch(namespace: string, items: Item[]): Promise<readonly Result<Value>[]>;
}

/** The typed calls of a kind: an item's own RPC, and the batch RPC. */
export interface Calls<Item, Response, BatchRequest, BatchResponse> {
  one(item: Item): Promise<Response>;
  batch(request: BatchRequest): Promise<BatchResponse>;
}

/** What one write item stores: a checkpoint, or a task's pending writes. */
export type WriteItem = Exclude<BatchWriteItem["item"], { case: undefined }>;
/** PutCheckpoint or PutWrites, by the item's case, and BatchWrite. */
export type WriteCalls = Calls<WriteItem, unknown, BatchWriteRequest, BatchWriteResponse>;
/** GetCheckpoint and BatchGetCheckpoints. */
export type ReadCalls = Calls<
  GetCheckpointRequest,
  GetCheckpointResponse,
  BatchGetCheckpointsRequest,
  BatchGetCheckpointsResponse
>;

/** Puts and writes, which travel as BatchWrite; each resolves to nothing once stored. */
export function writes(calls: WriteCalls): Kind<WriteItem, void> {
  return {
    method: "BatchWrite",
    size: (item) =>
      item.case === "putCheckpoint"
        ? toBinary(PutCheckpointRequestSchema, item.value).byteLength
        : toBinary(PutWritesRequestSchema, item.value).byteLength,
    one: async (item) => {
      await calls.one(item);
    },
    batch: async (namespace, items) => {
      const request = create(BatchWriteRequestSchema, { namespace, items: items.map((item) => ({ item })) });
      const response = await calls.batch(request);
      return response.results.map(({ code, message }) => ({ code, message, value: undefined }));
    },
  };
}

/** Checkpoint reads, which travel as BatchGetCheckpoints; each resolves to its checkpoint. */
export function reads(calls: ReadCalls): Kind<GetCheckpointRequest, Checkpoint | undefined> {
  return {
    method: "BatchGetCheckpoints",
    size: (item) => toBinary(GetCheckpointRequestSchema, item).byteLength,
    one: async (item) => (await calls.one(item)).checkpoint,
    batch: async (namespace, items) => {
      const response = await calls.batch(create(BatchGetCheckpointsRequestSchema, { namespace, items }));
      return response.results.map(({ code, message, checkpoint }) => ({ code, message, value: checkpoint }));
    },
  };
}

/** An item sent again on its own: the server could not serve it now, or not in this batch. */
const RESENT = new Set<number>([Code.Unavailable, Code.Aborted, Code.ResourceExhausted]);
/**
 * A call that failed with these failed for every item: sending them again alone cannot help.
 * CANCELLED: the call was cut, as when the saver closes its connection, which its items sent
 * again alone would open anew; a unary call cut so fails with it too.
 */
const FAILS_ALL = new Set<Code>([Code.Unavailable, Code.DeadlineExceeded, Code.Canceled]);
const OK = 0;

interface Waiting<Item, Value> {
  readonly item: Item;
  readonly size: number;
  readonly resolve: (value: Value) => void;
  readonly reject: (error: unknown) => void;
}

/** Sends one saver's calls of one kind, batching what piles up. */
export class Batcher<Item, Value> {
  private readonly waiting: Waiting<Item, Value>[] = [];
  private inFlight = 0;
  private batches = true;

  /** Sends through `kind`; a batch holds at most `maxBytes` of items, a larger item goes alone. */
  constructor(
    private readonly namespace: string,
    private readonly kind: Kind<Item, Value>,
    private readonly maxBytes: number,
  ) {}

  /**
   * Makes the item's call, or has it made in a batch; resolves to its value.
   *
   * @throws GrpcSaverError The item failed, with the code its own call would have ended with.
   */
  async send(item: Item): Promise<Value> {
    if (!this.batches || (this.inFlight < MAX_IN_FLIGHT && this.waiting.length === 0)) {
      return this.direct(item);
    }
    // Measured only when it waits: an item that goes at once is not encoded twice.
    const size = this.kind.size(item);
    if (size > this.maxBytes) return this.direct(item);
    return new Promise((resolve, reject) => this.waiting.push({ item, size, resolve, reject }));
  }

  /**
   * Fails the calls that wait, with CANCELLED: the saver is closing their connection, and
   * sending them would open another that nobody closes.
   */
  close(): void {
    for (const waiting of this.waiting.splice(0)) {
      waiting.reject(new GrpcSaverError(Code.Canceled, "the saver was closed"));
    }
  }

  private async direct(item: Item): Promise<Value> {
    this.inFlight += 1;
    try {
      return await this.kind.one(item);
    } finally {
      this.inFlight -= 1;
      this.next();
    }
  }

  /** Sends what waits, as one call, when there is room on the wire. */
  private next(): void {
    if (this.inFlight >= MAX_IN_FLIGHT || this.waiting.length === 0) return;
    const batch = this.take();
    this.inFlight += 1;
    void this.flush(batch).finally(() => {
      this.inFlight -= 1;
      this.next();
    });
  }

  private take(): Waiting<Item, Value>[] {
    let size = 0;
    let count = 0;
    for (const waiting of this.waiting) {
      if (count === MAX_ITEMS || (count > 0 && size + waiting.size > this.maxBytes)) break;
      size += waiting.size;
      count += 1;
    }
    return this.waiting.splice(0, count);
  }

  /** Settles every item of `batch`; never rejects. */
  private async flush(batch: Waiting<Item, Value>[]): Promise<void> {
    try {
      if (batch.length === 1 || !this.batches) {
        await Promise.all(batch.map((waiting) => this.alone(waiting)));
        return;
      }
      let results: readonly Result<Value>[];
      try {
        results = await this.kind.batch(
          this.namespace,
          batch.map((waiting) => waiting.item),
        );
      } catch (error) {
        if (!(error instanceof GrpcSaverError) || FAILS_ALL.has(error.code)) throw error;
        // Too large together, or an older server: each goes on its own.
        if (error.code === Code.Unimplemented) this.batches = false;
        await Promise.all(batch.map((waiting) => this.alone(waiting)));
        return;
      }
      if (results.length !== batch.length) {
        throw new GrpcSaverError(
          Code.Internal,
          `${this.kind.method} answered ${results.length} results for ${batch.length} items`,
        );
      }
      const resent: Promise<void>[] = [];
      batch.forEach((waiting, index) => {
        const { code, message, value } = results[index]!;
        if (code === OK) waiting.resolve(value);
        else if (RESENT.has(code)) resent.push(this.alone(waiting));
        else waiting.reject(new GrpcSaverError(code in Code ? (code as Code) : Code.Unknown, message));
      });
      await Promise.all(resent);
    } catch (error) {
      // The call failed for all, or unforeseen: every caller learns it (a settled one ignores it).
      for (const waiting of batch) waiting.reject(error);
    }
  }

  /** Sends one waiting item as its own call; never rejects. */
  private async alone(waiting: Waiting<Item, Value>): Promise<void> {
    try {
      waiting.resolve(await this.kind.one(waiting.item));
    } catch (error) {
      waiting.reject(error);
    }
  }
}
