/**
 * How the saver groups its calls, puts and writes as reads: which calls wait, and what each
 * caller learns.
 *
 * The transport here is a function that records the calls and answers as told, so these tests
 * need no server; batch-service.test.ts runs the same path against real servers.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { Batcher, type Kind, MAX_IN_FLIGHT, type WriteItem, reads, writes } from "../src/batch.js";
import { GrpcSaverError } from "../src/errors.js";
import { type Checkpoint, CheckpointSchema } from "../src/gen/lgcheckpoint/v1/checkpoint_pb.js";
import {
  type GetCheckpointRequest,
  BatchGetCheckpointsResponseSchema,
  BatchWriteResponseSchema,
  GetCheckpointRequestSchema,
  GetCheckpointResponseSchema,
  PutCheckpointRequestSchema,
  PutWritesRequestSchema,
} from "../src/gen/lgcheckpoint/v1/checkpoint_service_pb.js";

const MIB = 1 << 20;

/** Answers each call after a tick; `codes` decides an item's code by thread ID, once. */
class Transport {
  readonly calls: [string, string[]][] = [];
  constructor(
    readonly codes: Map<string, Code> = new Map(),
    readonly batchFailure?: unknown,
  ) {}

  /** PutCheckpoint, PutWrites and BatchWrite. */
  writes(): Kind<WriteItem, void> {
    return writes({
      one: async (item) => {
        await this.answer(item.case, item.value.threadId);
        return {};
      },
      batch: async (request) => {
        const threads = request.items.map((i) => i.item.value!.threadId);
        return create(BatchWriteResponseSchema, { results: await this.answerAll("batchWrite", threads) });
      },
    });
  }

  /** GetCheckpoint and BatchGetCheckpoints, answering each thread's `stored` checkpoint. */
  reads(): Kind<GetCheckpointRequest, Checkpoint | undefined> {
    return reads({
      one: async (request) => {
        await this.answer("getCheckpoint", request.threadId);
        return create(GetCheckpointResponseSchema, { checkpoint: stored(request.threadId) });
      },
      batch: async (request) => {
        const threads = request.items.map((i) => i.threadId);
        const results = (await this.answerAll("batchGetCheckpoints", threads)).map((result, n) =>
          result.code === 0 ? { ...result, checkpoint: stored(threads[n]!) } : result,
        );
        return create(BatchGetCheckpointsResponseSchema, { results });
      },
    });
  }

  /** The thread IDs of the items sent by `method`. */
  sent(method: string): string[] {
    return this.calls.filter(([m]) => m === method).flatMap(([, threads]) => threads);
  }

  private async answer(method: string, thread: string): Promise<void> {
    await tick();
    this.calls.push([method, [thread]]);
    const code = this.take(thread);
    if (code !== undefined) throw new GrpcSaverError(code, "no");
  }

  private async answerAll(method: string, threads: string[]): Promise<{ code: number; message: string }[]> {
    await tick();
    this.calls.push([method, threads]);
    if (this.batchFailure !== undefined) throw this.batchFailure;
    return threads.map((thread) => ({ code: this.take(thread) ?? 0, message: `${thread} failed` }));
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

/** The checkpoint the transport has for a thread: one that names it. */
function stored(threadId: string): Checkpoint {
  return create(CheckpointSchema, { threadId, checkpointId: `latest-of-${threadId}` });
}

function put(threadId: string, bytes = 0): WriteItem {
  const checkpoint = { type: "json", data: new Uint8Array(bytes) };
  return {
    case: "putCheckpoint",
    value: create(PutCheckpointRequestSchema, { threadId, checkpointId: "c1", checkpoint }),
  };
}

function putWrites(threadId: string): WriteItem {
  return { case: "putWrites", value: create(PutWritesRequestSchema, { threadId, checkpointId: "c1" }) };
}

function get(threadId: string, bytes = 0): GetCheckpointRequest {
  return create(GetCheckpointRequestSchema, { threadId, checkpointId: "c".repeat(bytes) });
}

const threads = (count: number) => Array.from({ length: count }, (_, n) => `t${n}`);

/** One kind of call as the tests drive it: its items, its methods, what its callers get. */
interface Case<Item, Value> {
  readonly name: string;
  kind(transport: Transport): Kind<Item, Value>;
  /** An item of a thread, about `bytes` larger than the smallest. */
  item(threadId: string, bytes?: number): Item;
  /** The method of an item sent alone, and of a batch, as the transport records them. */
  readonly one: string;
  readonly batch: string;
  /** What the caller of a thread's item gets. */
  value(threadId: string): Value;
}

const WRITES: Case<WriteItem, void> = {
  name: "puts and writes",
  kind: (transport) => transport.writes(),
  item: put,
  one: "putCheckpoint",
  batch: "batchWrite",
  value: () => undefined,
};

const READS: Case<GetCheckpointRequest, Checkpoint | undefined> = {
  name: "checkpoint reads",
  kind: (transport) => transport.reads(),
  item: get,
  one: "getCheckpoint",
  batch: "batchGetCheckpoints",
  value: stored,
};

function behaves<Item, Value>(c: Case<Item, Value>): void {
  describe(`the batcher of ${c.name}`, () => {
    it("sends calls at once until the wire is busy, then what waits together", async () => {
      const transport = new Transport();
      const batcher = new Batcher("ns", c.kind(transport), MIB);
      const ids = threads(10);
      const values = await Promise.all(ids.map((t) => batcher.send(c.item(t))));
      expect(values).toEqual(ids.map((t) => c.value(t)));
      expect(transport.calls.slice(0, MAX_IN_FLIGHT)).toEqual(ids.slice(0, MAX_IN_FLIGHT).map((t) => [c.one, [t]]));
      expect(transport.calls.slice(MAX_IN_FLIGHT)).toEqual([[c.batch, ids.slice(MAX_IN_FLIGHT)]]);
      // Idle again: the next call goes at once, on its own.
      expect(await batcher.send(c.item("later"))).toEqual(c.value("later"));
      expect(transport.calls.at(-1)).toEqual([c.one, ["later"]]);
    });

    it("tells each caller its own item's outcome, and sends again alone what the server could not serve now", async () => {
      const codes = new Map([
        ["t4", Code.NotFound],
        ["t5", Code.FailedPrecondition],
        ["t6", Code.Unavailable],
        ["t7", Code.Aborted],
        ["t8", Code.ResourceExhausted],
      ]);
      const transport = new Transport(codes);
      const batcher = new Batcher("ns", c.kind(transport), MIB);
      const ids = threads(10);
      const outcomes = await Promise.allSettled(ids.map((t) => batcher.send(c.item(t))));
      expect(outcomes.map((o) => o.status === "rejected")).toEqual(ids.map((t) => t === "t4" || t === "t5"));
      expect((outcomes[4] as PromiseRejectedResult).reason).toMatchObject({
        code: Code.NotFound,
        details: "t4 failed",
      });
      const error = (outcomes[5] as PromiseRejectedResult).reason as unknown;
      expect(error).toBeInstanceOf(GrpcSaverError);
      expect(error).toMatchObject({
        code: Code.FailedPrecondition,
        status: "FAILED_PRECONDITION",
        details: "t5 failed",
      });
      for (const n of [6, 7, 8]) {
        expect(outcomes[n]).toEqual({ status: "fulfilled", value: c.value(`t${n}`) });
      }
      // The items the server could not serve now were sent again on their own, and served.
      expect(transport.sent(c.one)).toEqual(expect.arrayContaining(["t6", "t7", "t8"]));
      expect(transport.sent(c.one)).not.toContain("t5");
    });

    it("gives a server without the batch RPC unary calls, from then on", async () => {
      const transport = new Transport(new Map(), new GrpcSaverError(Code.Unimplemented, "unknown method"));
      const batcher = new Batcher("ns", c.kind(transport), MIB);
      for (let round = 0; round < 2; round += 1) {
        const values = await Promise.all(threads(6).map((t) => batcher.send(c.item(t))));
        expect(values).toEqual(threads(6).map((t) => c.value(t)));
      }
      expect(transport.calls.filter(([m]) => m === c.batch)).toHaveLength(1);
      expect(transport.sent(c.one).sort()).toEqual([...threads(6), ...threads(6)].sort());
    });

    it("sends each item alone when the batch was refused as a whole, and keeps batching", async () => {
      const transport = new Transport(new Map(), new GrpcSaverError(Code.ResourceExhausted, "too large"));
      const batcher = new Batcher("ns", c.kind(transport), MIB);
      for (let round = 0; round < 2; round += 1) {
        await Promise.all(threads(6).map((t) => batcher.send(c.item(t))));
      }
      expect(transport.calls.filter(([m]) => m === c.batch)).toHaveLength(2);
      expect(transport.sent(c.one).sort()).toEqual([...threads(6), ...threads(6)].sort());
    });

    it.each([
      ["UNAVAILABLE", Code.Unavailable],
      ["DEADLINE_EXCEEDED", Code.DeadlineExceeded],
      ["CANCELLED (its saver was closed)", Code.Canceled],
    ])("fails every item of a call that failed with %s", async (_, code) => {
      const transport = new Transport(new Map(), new GrpcSaverError(code, "down"));
      const batcher = new Batcher("ns", c.kind(transport), MIB);
      const outcomes = await Promise.allSettled(threads(5).map((t) => batcher.send(c.item(t))));
      const batched = outcomes.slice(MAX_IN_FLIGHT);
      expect(batched.map((o) => o.status === "rejected" && (o.reason as GrpcSaverError).code)).toEqual(
        Array(5 - MAX_IN_FLIGHT).fill(code),
      );
      expect(transport.sent(c.one)).toEqual(threads(MAX_IN_FLIGHT));
    });

    it("keeps a batch within its bytes and sends a larger item alone", async () => {
      const transport = new Transport();
      const batcher = new Batcher("ns", c.kind(transport), 2500);
      const busy = threads(MAX_IN_FLIGHT).map((t) => batcher.send(c.item(t)));
      const waiting = [c.item("a", 1000), c.item("b", 1000), c.item("c", 1000), c.item("huge", 4000)].map((i) =>
        batcher.send(i),
      );
      await Promise.all([...busy, ...waiting]);
      // The huge item went on its own at once, past the calls in flight; the rest, two by two.
      expect(transport.calls).toEqual([
        ...threads(MAX_IN_FLIGHT).map((t) => [c.one, [t]]),
        [c.one, ["huge"]],
        [c.batch, ["a", "b"]],
        [c.one, ["c"]],
      ]);
    });

    it("fails the calls that wait with CANCELLED once closed, and sends none of them", async () => {
      const transport = new Transport();
      const batcher = new Batcher("ns", c.kind(transport), MIB);
      const sent = threads(4).map((t) => batcher.send(c.item(t)));
      batcher.close();
      const outcomes = await Promise.allSettled(sent);
      expect(outcomes[0]).toEqual({ status: "fulfilled", value: c.value("t0") });
      for (const outcome of outcomes.slice(MAX_IN_FLIGHT)) {
        expect(outcome).toMatchObject({ status: "rejected", reason: { code: Code.Canceled } });
      }
      expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({ details: "the saver was closed" });
      expect(transport.calls).toEqual(threads(MAX_IN_FLIGHT).map((t) => [c.one, [t]]));
    });

    it("does not stall when a batch fails unforeseen: its callers learn why, later calls go", async () => {
      // A caller cannot cancel a call (BaseCheckpointSaver's methods take no signal), so what
      // could stall the queue is a batch that never gives its slot on the wire back.
      const broken = new TypeError("broken transport");
      const transport = new Transport(new Map(), broken);
      const batcher = new Batcher("ns", c.kind(transport), MIB);
      const outcomes = await Promise.allSettled(threads(6).map((t) => batcher.send(c.item(t))));
      expect(outcomes.slice(MAX_IN_FLIGHT).map((o) => o.status === "rejected" && o.reason)).toEqual(
        Array(6 - MAX_IN_FLIGHT).fill(broken),
      );
      await Promise.all(["x", "y"].map((t) => batcher.send(c.item(t))));
      expect(transport.sent(c.one).slice(-2)).toEqual(["x", "y"]);
    });
  });
}

behaves(WRITES);
behaves(READS);

describe("the batcher of puts and writes", () => {
  it("sends puts and writes together in one BatchWrite", async () => {
    const transport = new Transport();
    const batcher = new Batcher("ns", transport.writes(), MIB);
    const ids = threads(10);
    await Promise.all(ids.map((t, n) => batcher.send(n % 2 ? putWrites(t) : put(t))));
    expect(transport.calls.slice(0, MAX_IN_FLIGHT)).toEqual(
      ids.slice(0, MAX_IN_FLIGHT).map((t, n) => [n % 2 ? "putWrites" : "putCheckpoint", [t]]),
    );
    expect(transport.calls.slice(MAX_IN_FLIGHT)).toEqual([["batchWrite", ids.slice(MAX_IN_FLIGHT)]]);
  });
});
