/**
 * How the saver groups its puts and writes: which calls wait, and what each caller learns.
 *
 * The transport here is a function that records the calls and answers as told, so these tests
 * need no server; service.test.ts runs the same path against real servers.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { type BatchCalls, Batcher, type Item, MAX_IN_FLIGHT } from "../src/batch.js";
import { GrpcSaverError } from "../src/errors.js";
import {
  type BatchWriteRequest,
  type BatchWriteResponse,
  BatchWriteResponseSchema,
  PutCheckpointRequestSchema,
  PutWritesRequestSchema,
} from "../src/gen/lgcheckpoint/v1/checkpoint_service_pb.js";

const MIB = 1 << 20;

/** Answers each call after a tick; `codes` decides an item's code by thread ID, once. */
class Transport implements BatchCalls {
  readonly calls: [string, string[]][] = [];
  constructor(
    readonly codes: Map<string, Code> = new Map(),
    readonly batchFailure?: unknown,
  ) {}

  async one(item: Item): Promise<unknown> {
    await tick();
    this.calls.push([item.case, [item.value.threadId]]);
    const code = this.take(item.value.threadId);
    if (code !== undefined) throw new GrpcSaverError(code, "no");
    return {};
  }

  async batch(request: BatchWriteRequest): Promise<BatchWriteResponse> {
    await tick();
    const threads = request.items.map((i) => i.item.value!.threadId);
    this.calls.push(["batchWrite", threads]);
    if (this.batchFailure !== undefined) throw this.batchFailure;
    const results = threads.map((thread) => ({ code: this.take(thread) ?? 0, message: `${thread} failed` }));
    return create(BatchWriteResponseSchema, { results });
  }

  /** The thread IDs of the items sent by `method`. */
  sent(method: string): string[] {
    return this.calls.filter(([m]) => m === method).flatMap(([, threads]) => threads);
  }

  private take(thread: string): Code | undefined {
    const code = this.codes.get(thread);
    this.codes.delete(thread);
    return code;
  }
}

function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 10));
}

function put(threadId: string, bytes = 0): Item {
  const checkpoint = { type: "json", data: new Uint8Array(bytes) };
  return {
    case: "putCheckpoint",
    value: create(PutCheckpointRequestSchema, { threadId, checkpointId: "c1", checkpoint }),
  };
}

function writes(threadId: string): Item {
  return { case: "putWrites", value: create(PutWritesRequestSchema, { threadId, checkpointId: "c1" }) };
}

const threads = (count: number) => Array.from({ length: count }, (_, n) => `t${n}`);

describe("the batcher", () => {
  it("sends calls at once until the wire is busy, then what waits together", async () => {
    const transport = new Transport();
    const batcher = new Batcher("ns", transport, MIB);
    const ids = threads(10);
    await Promise.all(ids.map((t, n) => batcher.send(n % 2 ? writes(t) : put(t))));
    expect(transport.calls.slice(0, MAX_IN_FLIGHT)).toEqual(
      ids.slice(0, MAX_IN_FLIGHT).map((t, n) => [n % 2 ? "putWrites" : "putCheckpoint", [t]]),
    );
    expect(transport.calls.slice(MAX_IN_FLIGHT)).toEqual([["batchWrite", ids.slice(MAX_IN_FLIGHT)]]);
    // Idle again: the next call goes at once, on its own.
    await batcher.send(put("later"));
    expect(transport.calls.at(-1)).toEqual(["putCheckpoint", ["later"]]);
  });

  it("tells each caller its own item's outcome, and sends an unavailable item again alone", async () => {
    const codes = new Map([
      ["t5", Code.FailedPrecondition],
      ["t6", Code.Unavailable],
      ["t7", Code.Aborted],
    ]);
    const transport = new Transport(codes);
    const batcher = new Batcher("ns", transport, MIB);
    const outcomes = await Promise.allSettled(threads(9).map((t) => batcher.send(put(t))));
    expect(outcomes.map((o) => o.status === "rejected")).toEqual(threads(9).map((t) => t === "t5"));
    const error = (outcomes[5] as PromiseRejectedResult).reason as unknown;
    expect(error).toBeInstanceOf(GrpcSaverError);
    expect(error).toMatchObject({ code: Code.FailedPrecondition, status: "FAILED_PRECONDITION", details: "t5 failed" });
    // Both items the server could not store now were sent again on their own, and stored.
    expect(transport.sent("putCheckpoint")).toEqual(expect.arrayContaining(["t6", "t7"]));
    expect(transport.sent("putCheckpoint")).not.toContain("t5");
  });

  it("gives a server without BatchWrite unary calls, from then on", async () => {
    const transport = new Transport(new Map(), new GrpcSaverError(Code.Unimplemented, "unknown method"));
    const batcher = new Batcher("ns", transport, MIB);
    for (let round = 0; round < 2; round += 1) {
      await Promise.all(threads(6).map((t) => batcher.send(put(t))));
    }
    expect(transport.calls.filter(([m]) => m === "batchWrite")).toHaveLength(1);
    expect(transport.sent("putCheckpoint").sort()).toEqual([...threads(6), ...threads(6)].sort());
  });

  it("sends each item alone when the batch was refused as a whole, and keeps batching", async () => {
    const transport = new Transport(new Map(), new GrpcSaverError(Code.ResourceExhausted, "too large"));
    const batcher = new Batcher("ns", transport, MIB);
    for (let round = 0; round < 2; round += 1) {
      await Promise.all(threads(6).map((t) => batcher.send(put(t))));
    }
    expect(transport.calls.filter(([m]) => m === "batchWrite")).toHaveLength(2);
    expect(transport.sent("putCheckpoint").sort()).toEqual([...threads(6), ...threads(6)].sort());
  });

  it.each([
    ["UNAVAILABLE", Code.Unavailable],
    ["DEADLINE_EXCEEDED", Code.DeadlineExceeded],
  ])("fails every item of a call that failed with %s", async (_, code) => {
    const transport = new Transport(new Map(), new GrpcSaverError(code, "down"));
    const batcher = new Batcher("ns", transport, MIB);
    const outcomes = await Promise.allSettled(threads(5).map((t) => batcher.send(put(t))));
    const batched = outcomes.slice(MAX_IN_FLIGHT);
    expect(batched.map((o) => o.status === "rejected" && (o.reason as GrpcSaverError).code)).toEqual(
      Array(5 - MAX_IN_FLIGHT).fill(code),
    );
    expect(transport.sent("putCheckpoint")).toEqual(threads(MAX_IN_FLIGHT));
  });

  it("keeps a batch within its bytes and sends a larger item alone", async () => {
    const transport = new Transport();
    const batcher = new Batcher("ns", transport, 2500);
    const busy = threads(MAX_IN_FLIGHT).map((t) => batcher.send(put(t)));
    const waiting = [put("a", 1000), put("b", 1000), put("c", 1000), put("huge", 4000)].map((i) => batcher.send(i));
    await Promise.all([...busy, ...waiting]);
    // The huge item went on its own at once, past the calls in flight; the rest, two by two.
    expect(transport.calls).toEqual([
      ...threads(MAX_IN_FLIGHT).map((t) => ["putCheckpoint", [t]]),
      ["putCheckpoint", ["huge"]],
      ["batchWrite", ["a", "b"]],
      ["putCheckpoint", ["c"]],
    ]);
  });

  it("does not stall when a batch fails unforeseen: its callers learn why, later calls go", async () => {
    // A caller cannot cancel a put (BaseCheckpointSaver's methods take no signal), so what
    // could stall the queue is a batch that never gives its slot on the wire back.
    const broken = new TypeError("broken transport");
    const transport = new Transport(new Map(), broken);
    const batcher = new Batcher("ns", transport, MIB);
    const outcomes = await Promise.allSettled(threads(6).map((t) => batcher.send(put(t))));
    expect(outcomes.slice(MAX_IN_FLIGHT).map((o) => o.status === "rejected" && o.reason)).toEqual(
      Array(6 - MAX_IN_FLIGHT).fill(broken),
    );
    await Promise.all(["x", "y"].map((t) => batcher.send(put(t))));
    expect(transport.sent("putCheckpoint").slice(-2)).toEqual(["x", "y"]);
  });
});
