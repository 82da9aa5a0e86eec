/**
 * Concurrent puts and writes of one saver, sent together as BatchWrite calls.
 *
 * LangGraph.js stores a checkpoint while its tasks' writes are still being stored, and a saver
 * that many threads share stores theirs at the same time; each unary call costs the server far
 * more than the rows it stores. So a put or a write goes out at once, as its own call, while
 * fewer than `MAX_IN_FLIGHT` calls are on the wire; one made meanwhile waits, and when a call
 * comes back everything that waits goes as one `BatchWrite`. An idle saver adds no latency, and
 * a busy one sends fewer, larger calls, which the server commits together.
 *
 * Each item succeeds or fails as its own call would: an item the server could not store now
 * (`UNAVAILABLE`) is sent again on its own, with the saver's retries; a server without
 * `BatchWrite` gets unary calls from then on. The Python client's `_batch.py` does the same.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type BatchWriteItem,
  type BatchWriteRequest,
  type BatchWriteResponse,
  BatchWriteRequestSchema,
  PutCheckpointRequestSchema,
  PutWritesRequestSchema,
} from "./gen/lgcheckpoint/v1/checkpoint_service_pb.js";
import { GrpcSaverError } from "./errors.js";

/**
 * One call on the wire at a time: what LangGraph issues meanwhile (a step's writes beside its
 * checkpoint, other threads' steps) goes in the next call. The Python client measured 1.8
 * calls per super-step with one thread at a time against 2.2 with two, at the same speed.
 */
export const MAX_IN_FLIGHT = 1;
/** Items per batch; the server takes up to 1000. */
export const MAX_ITEMS = 200;

/** What one item stores: a checkpoint, or a task's pending writes. */
export type Item = Exclude<BatchWriteItem["item"], { case: undefined }>;

/** How the batcher reaches the server; both reject with `GrpcSaverError`. */
export interface BatchCalls {
  /** Stores one item as its own PutCheckpoint or PutWrites call. */
  one(item: Item): Promise<unknown>;
  /** One BatchWrite call. */
  batch(request: BatchWriteRequest): Promise<BatchWriteResponse>;
}

/** An item sent again on its own: the server could not store it now, its own call may. */
const RESENT = new Set<number>([Code.Unavailable, Code.Aborted]);
/** A call that failed with these failed for every item: sending them again alone cannot help. */
const FAILS_ALL = new Set<Code>([Code.Unavailable, Code.DeadlineExceeded]);
const OK = 0;

interface Waiting {
  readonly item: Item;
  readonly size: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** Sends one saver's PutCheckpoint and PutWrites calls, batching what piles up. */
export class Batcher {
  private readonly waiting: Waiting[] = [];
  private inFlight = 0;
  private batches = true;

  /** Sends through `calls`; a batch holds at most `maxBytes` of items, a larger item goes alone. */
  constructor(
    private readonly namespace: string,
    private readonly calls: BatchCalls,
    private readonly maxBytes: number,
  ) {}

  /**
   * Stores `item`, as its own call would.
   *
   * @throws GrpcSaverError The item failed, with the code its own call would have ended with.
   */
  async send(item: Item): Promise<void> {
    if (!this.batches || (this.inFlight < MAX_IN_FLIGHT && this.waiting.length === 0)) {
      return this.direct(item);
    }
    // Measured only when it waits: an item that goes at once is not encoded twice.
    const size = byteSize(item);
    if (size > this.maxBytes) return this.direct(item);
    return new Promise((resolve, reject) => this.waiting.push({ item, size, resolve, reject }));
  }

  private async direct(item: Item): Promise<void> {
    this.inFlight += 1;
    try {
      await this.calls.one(item);
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

  private take(): Waiting[] {
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
  private async flush(batch: Waiting[]): Promise<void> {
    try {
      if (batch.length === 1 || !this.batches) {
        await Promise.all(batch.map((waiting) => this.alone(waiting)));
        return;
      }
      const request = create(BatchWriteRequestSchema, {
        namespace: this.namespace,
        items: batch.map((waiting) => ({ item: waiting.item })),
      });
      let response: BatchWriteResponse;
      try {
        response = await this.calls.batch(request);
      } catch (error) {
        if (!(error instanceof GrpcSaverError) || FAILS_ALL.has(error.code)) throw error;
        // Too large together, or an older server: each goes on its own.
        if (error.code === Code.Unimplemented) this.batches = false;
        await Promise.all(batch.map((waiting) => this.alone(waiting)));
        return;
      }
      if (response.results.length !== batch.length) {
        throw new GrpcSaverError(
          Code.Internal,
          `BatchWrite answered ${response.results.length} results for ${batch.length} items`,
        );
      }
      const resent: Promise<void>[] = [];
      batch.forEach((waiting, index) => {
        const { code, message } = response.results[index]!;
        if (code === OK) waiting.resolve();
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
  private async alone(waiting: Waiting): Promise<void> {
    try {
      await this.calls.one(waiting.item);
      waiting.resolve();
    } catch (error) {
      waiting.reject(error);
    }
  }
}

function byteSize(item: Item): number {
  return item.case === "putCheckpoint"
    ? toBinary(PutCheckpointRequestSchema, item.value).byteLength
    : toBinary(PutWritesRequestSchema, item.value).byteLength;
}
