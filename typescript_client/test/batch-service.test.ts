/**
 * Concurrent calls of one saver against a real server: puts and writes are each stored, or
 * refused alone, reads each answer what their own GetCheckpoint would, and they travelled in
 * BatchWrite and BatchGetCheckpoints calls, as the server's own metrics count them.
 */
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import type { RunnableConfig } from "@langchain/core/runnables";
import { Code } from "@connectrpc/connect";
import {
  emptyCheckpoint,
  uuid6,
  type Checkpoint,
  type CheckpointMetadata,
  type CheckpointTuple,
} from "@langchain/langgraph-checkpoint";
import { MAX_IN_FLIGHT } from "../src/batch.js";
import { GrpcSaver, nextVersion } from "../src/index.js";
import { type OlderServer, olderServer } from "./older-server.js";
import { SERVERS, freePort, serve, stop } from "./servers.js";

const THREADS = 40;

/** Calls the server handled, by method, from its Prometheus endpoint. */
async function callsByMethod(metricsPort: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const calls = new Map<string, number>();
  for (const match of text.matchAll(/^checkpoint_server_rpcs_total\{([^}]*)\} (\S+)$/gm)) {
    const method = /method="([^"]*)"/.exec(match[1]!)?.[1] ?? "";
    calls.set(method, (calls.get(method) ?? 0) + Number(match[2]));
  }
  return calls;
}

function config(threadId: string, more: Record<string, string> = {}): RunnableConfig {
  return { configurable: { thread_id: threadId, checkpoint_ns: "", ...more } };
}

/** How many calls of `method` the server handled while `action` ran. */
async function counted(metricsPort: number, method: string, action: () => Promise<unknown>): Promise<number> {
  const before = (await callsByMethod(metricsPort)).get(method) ?? 0;
  await action();
  return ((await callsByMethod(metricsPort)).get(method) ?? 0) - before;
}

const LOOP = { source: "loop", step: 0, parents: {} } as CheckpointMetadata;

/**
 * A checkpoint whose channel `value` holds `value`, and its new version of the channel: the
 * service stores a value per (channel, version), so each checkpoint gets a version of its own.
 */
function withValue(value: unknown): [Checkpoint, Record<string, string>] {
  const version = nextVersion(undefined);
  const checkpoint = { ...emptyCheckpoint(), id: uuid6(-1) };
  checkpoint.channel_values = { value };
  checkpoint.channel_versions = { value: version };
  return [checkpoint, { value: version }];
}

/** The server the calls of a describe block go to: its own, so that its metrics count them alone. */
interface OwnServer {
  port: number;
  metricsPort: number;
  /** A saver in a namespace of its own, new for every test. */
  saver: GrpcSaver;
}

/** Starts a server of the block's own on `databaseUrl` and gives each test a fresh saver. */
function ownServer(databaseUrl: string, prefix: string): OwnServer {
  const own = {} as OwnServer;
  let child: ChildProcess;
  beforeAll(async () => {
    own.port = await freePort();
    own.metricsPort = await freePort();
    child = await serve(databaseUrl, own.port, "--metrics-listen", `127.0.0.1:${own.metricsPort}`);
  });
  afterAll(() => stop(child));
  beforeEach(() => {
    own.saver = new GrpcSaver(`grpc://127.0.0.1:${own.port}`, { namespace: `${prefix}-${randomUUID()}` });
  });
  afterEach(() => own.saver.close());
  return own;
}

describe.each(SERVERS)("batched puts and writes on $database", (server) => {
  const own = ownServer(server.database_url, "batch");

  it("stores every concurrent put and write, most of them sent in BatchWrite calls", async () => {
    const store = async (n: number) => {
      const meta = { source: "loop", step: n, parents: {} } as CheckpointMetadata;
      const stored = await own.saver.put(config(`t${n}`), { ...emptyCheckpoint(), id: uuid6(-1) }, meta, {});
      await own.saver.putWrites(stored, [["c", n]], "task");
    };
    await Promise.all(Array.from({ length: THREADS }, (_, n) => store(n)));
    for (let n = 0; n < THREADS; n += 1) {
      const tuple = await own.saver.getTuple(config(`t${n}`));
      expect(tuple?.metadata?.step).toBe(n);
      expect(tuple?.pendingWrites).toEqual([["task", "c", n]]);
    }
    const calls = await callsByMethod(own.metricsPort);
    expect(calls.get("BatchWrite") ?? 0).toBeGreaterThan(0);
    // 80 calls made, two at a time on the wire: far fewer went alone.
    expect((calls.get("PutCheckpoint") ?? 0) + (calls.get("PutWrites") ?? 0)).toBeLessThan(THREADS);
  });

  it("refuses a bad item alone, naming its field, and stores the others of its batch", async () => {
    const meta = { source: "input", step: -1, parents: {} } as CheckpointMetadata;
    const threadIds = Array.from({ length: 10 }, (_, n) => (n === 6 ? "t".repeat(5000) : `ok${n}`));
    const before = (await callsByMethod(own.metricsPort)).get("BatchWrite") ?? 0;
    const outcomes = await Promise.allSettled(
      threadIds.map((t) => own.saver.put(config(t), { ...emptyCheckpoint(), id: uuid6(-1) }, meta, {})),
    );
    expect(outcomes.map((o) => o.status)).toEqual(threadIds.map((t) => (t.length > 100 ? "rejected" : "fulfilled")));
    expect((outcomes[6] as PromiseRejectedResult).reason).toMatchObject({ code: Code.InvalidArgument });
    expect((outcomes[6] as PromiseRejectedResult).reason.details).toContain("thread_id");
    expect(await own.saver.threads.count()).toBe(9);
    expect((await callsByMethod(own.metricsPort)).get("BatchWrite") ?? 0).toBeGreaterThan(before);
  });
});

describe.each(SERVERS)("batched checkpoint reads on $database", (server) => {
  const own = ownServer(server.database_url, "reads");

  /** Threads `t0`… with a checkpoint each, its step its number and one pending write. */
  async function storeThreads(count: number, on: GrpcSaver = own.saver): Promise<void> {
    for (let n = 0; n < count; n += 1) {
      const meta = { source: "loop", step: n, parents: {} } as CheckpointMetadata;
      const stored = await on.put(config(`t${n}`), { ...emptyCheckpoint(), id: uuid6(-1) }, meta, {});
      await on.putWrites(stored, [["c", n]], "task");
    }
  }

  it("reads concurrent getTuple calls in one BatchGetCheckpoints, each as its own GetCheckpoint would", async () => {
    // Thread "a": c1 with a pending write, then c2; in checkpoint_ns "child", c3; thread "b": c4.
    const [first, firstVersions] = withValue("first");
    const c1 = await own.saver.put(config("a"), first, LOOP, firstVersions);
    await own.saver.putWrites(c1, [["value", "pending"]], "task-1");
    const [second, secondVersions] = withValue("second");
    await own.saver.put(c1, second, { ...LOOP, step: 1 }, secondVersions);
    const [child3, childVersions] = withValue("in the sub-graph");
    const c3 = await own.saver.put(config("a", { checkpoint_ns: "child" }), child3, LOOP, childVersions);
    const [onB, bVersions] = withValue("b");
    await own.saver.put(config("b"), onB, LOOP, bVersions);
    const id = (stored: RunnableConfig) => String(stored.configurable?.checkpoint_id);
    const reads = [
      config("a"), // the latest
      config("a", { checkpoint_id: id(c1) }), // by ID, with its pending write
      config("a", { checkpoint_ns: "child" }),
      config("a", { checkpoint_ns: "child", checkpoint_id: id(c3) }),
      config("b"),
      config("nobody"), // a missing thread
      config("a", { checkpoint_id: uuid6(-1) }), // a missing checkpoint
      config("b", { checkpoint_ns: "child" }), // a missing checkpoint_ns
      { configurable: { thread_id: "a" } }, // checkpoint_ns left out: the root graph's
    ];
    const many = [...reads, ...reads, ...reads];
    // One at a time, each read is its own GetCheckpoint.
    const alone: (CheckpointTuple | undefined)[] = [];
    const unary = await counted(own.metricsPort, "GetCheckpoint", async () => {
      for (const read of many) alone.push(await own.saver.getTuple(read));
    });
    expect(unary).toBe(many.length);
    expect(alone[0]?.checkpoint.channel_values).toEqual({ value: "second" });
    expect(alone[1]?.pendingWrites).toEqual([["task-1", "value", "pending"]]);
    expect(alone[2]?.checkpoint.channel_values).toEqual({ value: "in the sub-graph" });
    expect(alone.slice(5, 8)).toEqual([undefined, undefined, undefined]);
    // All at once: one goes alone, the others wait for it and travel together.
    let together: (CheckpointTuple | undefined)[] = [];
    const singles = await counted(own.metricsPort, "GetCheckpoint", async () => {
      const batches = await counted(own.metricsPort, "BatchGetCheckpoints", async () => {
        together = await Promise.all(many.map((read) => own.saver.getTuple(read)));
      });
      expect(batches).toBe(1);
    });
    expect(singles).toBe(MAX_IN_FLIGHT);
    expect(together).toEqual(alone);
  });

  it("refuses a bad read alone, as its own call would, and answers the others of its batch", async () => {
    await storeThreads(10);
    const threadIds = Array.from({ length: 10 }, (_, n) => (n === 6 ? "t".repeat(5000) : `t${n}`));
    let outcomes: PromiseSettledResult<CheckpointTuple | undefined>[] = [];
    const batches = await counted(own.metricsPort, "BatchGetCheckpoints", async () => {
      outcomes = await Promise.allSettled(threadIds.map((t) => own.saver.getTuple(config(t))));
    });
    expect(batches).toBe(1);
    expect(outcomes.map((o) => o.status)).toEqual(threadIds.map((t) => (t.length > 100 ? "rejected" : "fulfilled")));
    outcomes.forEach((outcome, n) => {
      if (outcome.status === "fulfilled") expect(outcome.value?.metadata?.step).toBe(n);
    });
    const refused = (outcomes[6] as PromiseRejectedResult).reason;
    const ownCall = await own.saver.getTuple(config(threadIds[6]!)).catch((error: unknown) => error);
    expect(ownCall).toMatchObject({ code: Code.InvalidArgument });
    expect(refused).toMatchObject({ name: "GrpcSaverError", code: Code.InvalidArgument, status: "INVALID_ARGUMENT" });
    expect(refused.details).toContain("thread_id");
  });

  it("reads alone a checkpoint that did not fit in the batch's response", async () => {
    // A server whose responses hold two large checkpoints, not three.
    const limit = 300_000;
    const smallPort = await freePort();
    const smallMetrics = await freePort();
    const small = await serve(
      server.database_url,
      smallPort,
      "--max-message-bytes",
      String(limit),
      "--metrics-listen",
      `127.0.0.1:${smallMetrics}`,
    );
    const tight = new GrpcSaver(`grpc://127.0.0.1:${smallPort}`, {
      namespace: own.saver.namespace,
      maxMessageBytes: limit,
    });
    try {
      for (const [thread, letter] of [
        ["big", "x"],
        ["other", "y"],
      ] as const) {
        const [checkpoint, versions] = withValue(letter.repeat(120_000));
        await tight.put(config(thread), checkpoint, LOOP, versions);
      }
      // "other" goes alone; "big", "other", "big" wait and go together, and the second "big"
      // does not fit in that response: it is read again on its own.
      const threadIds = ["other", "big", "other", "big"];
      let tuples: (CheckpointTuple | undefined)[] = [];
      const singles = await counted(smallMetrics, "GetCheckpoint", async () => {
        const batches = await counted(smallMetrics, "BatchGetCheckpoints", async () => {
          tuples = await Promise.all(threadIds.map((t) => tight.getTuple(config(t))));
        });
        expect(batches).toBe(1);
      });
      expect(singles).toBe(MAX_IN_FLIGHT + 1);
      expect(tuples.map((t) => t?.checkpoint.channel_values.value)).toEqual(
        ["y", "x", "y", "x"].map((letter) => letter.repeat(120_000)),
      );
    } finally {
      tight.close();
      await stop(small);
    }
  });

  it("fails the reads that wait with CANCELLED when the saver closes, and sends none of them", async () => {
    await storeThreads(5);
    let outcomes: PromiseSettledResult<CheckpointTuple | undefined>[] = [];
    const batches = await counted(own.metricsPort, "BatchGetCheckpoints", async () => {
      const reading = Promise.allSettled(threads(5).map((t) => own.saver.getTuple(config(t))));
      own.saver.close();
      outcomes = await reading;
    });
    // The read on the wire (or about to be) ends as any call cut by close() does.
    for (const outcome of outcomes.slice(MAX_IN_FLIGHT)) {
      expect(outcome).toMatchObject({
        status: "rejected",
        reason: { code: Code.Canceled, details: "the saver was closed" },
      });
    }
    expect(batches).toBe(0);
  });

  describe("on a server without BatchGetCheckpoints", () => {
    const METHOD = "/lgcheckpoint.v1.CheckpointService/BatchGetCheckpoints";
    let older: OlderServer;
    beforeEach(async () => {
      older = await olderServer(`127.0.0.1:${own.port}`, [METHOD]);
    });
    afterEach(() => older.close());

    it("reads with GetCheckpoint calls, from its first refusal on", async () => {
      const old = new GrpcSaver(`grpc://${older.target}`, { namespace: own.saver.namespace });
      try {
        await storeThreads(10, old);
        for (let round = 0; round < 2; round += 1) {
          const singles = await counted(own.metricsPort, "GetCheckpoint", async () => {
            const tuples = await Promise.all(threads(10).map((t) => old.getTuple(config(t))));
            expect(tuples.map((t) => t?.metadata?.step)).toEqual(threads(10).map((_, n) => n));
            expect(tuples.map((t) => t?.pendingWrites)).toEqual(threads(10).map((_, n) => [["task", "c", n]]));
          });
          expect(singles).toBe(10);
          // It was asked once, in the first round; never again.
          expect(older.refused.get(METHOD)).toBe(1);
        }
      } finally {
        old.close();
      }
    });
  });
});

function threads(count: number): string[] {
  return Array.from({ length: count }, (_, n) => `t${n}`);
}
