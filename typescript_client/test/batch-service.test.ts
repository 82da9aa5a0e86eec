/**
 * Concurrent puts and writes of one saver against a real server: each is stored, or refused
 * alone, and they travelled in BatchWrite calls, as the server's own metrics count them.
 */
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { emptyCheckpoint, uuid6, type CheckpointMetadata } from "@langchain/langgraph-checkpoint";
import { GrpcSaver } from "../src/index.js";
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

function config(threadId: string) {
  return { configurable: { thread_id: threadId, checkpoint_ns: "" } };
}

describe.each(SERVERS)("batched puts and writes on $database", (server) => {
  let child: ChildProcess;
  let port: number;
  let metricsPort: number;
  let saver: GrpcSaver;
  beforeAll(async () => {
    // A server of the test's own, so that its metrics count this test's calls alone.
    port = await freePort();
    metricsPort = await freePort();
    child = await serve(server.database_url, port, "--metrics-listen", `127.0.0.1:${metricsPort}`);
  });
  afterAll(() => stop(child));
  beforeEach(() => {
    saver = new GrpcSaver(`grpc://127.0.0.1:${port}`, { namespace: `batch-${randomUUID()}` });
  });
  afterEach(() => saver.close());

  it("stores every concurrent put and write, most of them sent in BatchWrite calls", async () => {
    const store = async (n: number) => {
      const meta = { source: "loop", step: n, parents: {} } as CheckpointMetadata;
      const stored = await saver.put(config(`t${n}`), { ...emptyCheckpoint(), id: uuid6(-1) }, meta, {});
      await saver.putWrites(stored, [["c", n]], "task");
    };
    await Promise.all(Array.from({ length: THREADS }, (_, n) => store(n)));
    for (let n = 0; n < THREADS; n += 1) {
      const tuple = await saver.getTuple(config(`t${n}`));
      expect(tuple?.metadata?.step).toBe(n);
      expect(tuple?.pendingWrites).toEqual([["task", "c", n]]);
    }
    const calls = await callsByMethod(metricsPort);
    expect(calls.get("BatchWrite") ?? 0).toBeGreaterThan(0);
    // 80 calls made, two at a time on the wire: far fewer went alone.
    expect((calls.get("PutCheckpoint") ?? 0) + (calls.get("PutWrites") ?? 0)).toBeLessThan(THREADS);
  });

  it("refuses a bad item alone, naming its field, and stores the others of its batch", async () => {
    const meta = { source: "input", step: -1, parents: {} } as CheckpointMetadata;
    const threadIds = Array.from({ length: 10 }, (_, n) => (n === 6 ? "t".repeat(5000) : `ok${n}`));
    const before = (await callsByMethod(metricsPort)).get("BatchWrite") ?? 0;
    const outcomes = await Promise.allSettled(
      threadIds.map((t) => saver.put(config(t), { ...emptyCheckpoint(), id: uuid6(-1) }, meta, {})),
    );
    expect(outcomes.map((o) => o.status)).toEqual(threadIds.map((t) => (t.length > 100 ? "rejected" : "fulfilled")));
    expect((outcomes[6] as PromiseRejectedResult).reason).toMatchObject({ code: Code.InvalidArgument });
    expect((outcomes[6] as PromiseRejectedResult).reason.details).toContain("thread_id");
    expect(await saver.threads.count()).toBe(9);
    expect((await callsByMethod(metricsPort)).get("BatchWrite") ?? 0).toBeGreaterThan(before);
  });
});
