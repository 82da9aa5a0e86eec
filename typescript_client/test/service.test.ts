import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { RunnableConfig } from "@langchain/core/runnables";
import { Code } from "@connectrpc/connect";
import { emptyCheckpoint, uuid6, type Checkpoint, type CheckpointMetadata } from "@langchain/langgraph-checkpoint";
import { type Event, GrpcSaver, GrpcSaverError, nextVersion } from "../src/index.js";
import { ListCheckpointsRequestSchema } from "../src/gen/lgcheckpoint/v1/checkpoint_service_pb.js";
import { SERVERS } from "./servers.js";

function checkpoint(id = uuid6(-1)): Checkpoint {
  return { ...emptyCheckpoint(), id };
}

function config(threadId: string, checkpointId?: string) {
  return {
    configurable: { thread_id: threadId, checkpoint_ns: "", ...(checkpointId ? { checkpoint_id: checkpointId } : {}) },
  };
}

async function take(events: AsyncGenerator<Event>, count: number): Promise<Event[]> {
  const taken: Event[] = [];
  for await (const event of events) {
    taken.push(event);
    if (taken.length === count) break;
  }
  return taken;
}

describe("versions", () => {
  it("are minted in the Python client's form", () => {
    // f"{current_v + 1:016}.{random.getrandbits(48):012x}" in _saver.py.
    expect(nextVersion(undefined)).toMatch(/^0000000000000001\.[0-9a-f]{12}$/);
    expect(nextVersion(7)).toMatch(/^0000000000000008\.[0-9a-f]{12}$/);
    expect(nextVersion("0000000000000041.00ab00cd00ef")).toMatch(/^0000000000000042\.[0-9a-f]{12}$/);
    expect(nextVersion("0000000000000001.000000000000")).not.toBe(nextVersion("0000000000000001.000000000000"));
    const ordered = [undefined, 1, 9, 99, 999].map((v) => nextVersion(v));
    expect([...ordered].sort()).toEqual(ordered);
  });
});

describe.each(SERVERS)("the service on $database", (server) => {
  let saver: GrpcSaver;
  beforeEach(() => {
    saver = new GrpcSaver(server.target, { namespace: `service-${randomUUID()}` });
  });
  afterEach(() => saver.close());

  it("keeps namespaces apart", async () => {
    const other = new GrpcSaver(server.target, { namespace: `${saver.namespace}-other` });
    try {
      const stored = await saver.put(config("shared"), checkpoint(), { source: "input", step: -1, parents: {} }, {});
      await saver.putWrites(stored, [["x", 1]], "task");
      expect(await other.getTuple(config("shared"))).toBeUndefined();
      const listed = [];
      for await (const t of other.list({})) listed.push(t);
      expect(listed).toEqual([]);
      expect(await other.threads.count()).toBe(0);
      await other.deleteThread("shared");
      await other.prune(["shared"], "delete");
      await expect(other.threads.get("shared")).rejects.toMatchObject({ code: Code.NotFound });
      expect((await saver.getTuple(config("shared")))?.pendingWrites).toEqual([["task", "x", 1]]);
    } finally {
      other.close();
    }
  });

  it("answers bad input with the server's message naming the field", async () => {
    const tooLong = "t".repeat(5000);
    const error = await saver
      .put(config(tooLong), checkpoint(), { source: "input", step: -1, parents: {} }, {})
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GrpcSaverError);
    expect(error).toMatchObject({ code: Code.InvalidArgument, status: "INVALID_ARGUMENT" });
    expect((error as GrpcSaverError).details).toContain("thread_id");
    await expect(saver.threads.search({ limit: -1 })).rejects.toMatchObject({ code: Code.InvalidArgument });
    // Nothing half-written.
    expect(await saver.threads.count()).toBe(0);
  });

  it("walks a listing page by page, newest first, stopping at the limit", async () => {
    let stored: RunnableConfig = config("pages");
    const ids: string[] = [];
    for (let step = 0; step < 5; step += 1) {
      const c = checkpoint(uuid6(-1));
      ids.push(c.id);
      stored = await saver.put(stored, c, { source: "loop", step, parents: {} }, {});
    }
    const request = create(ListCheckpointsRequestSchema, {
      namespace: saver.namespace,
      threadId: "pages",
      pageSize: 2,
    });
    const walked = [];
    for await (const t of saver.pages(request, undefined)) walked.push(t.checkpoint.id);
    expect(walked).toEqual([...ids].reverse());
    const limited = [];
    for await (const t of saver.pages(request, 3)) limited.push(t.checkpoint.id);
    expect(limited).toEqual([...ids].reverse().slice(0, 3));
    const before = [];
    for await (const t of saver.list(config("pages"), { before: config("pages", ids[2]), limit: 10 })) {
      before.push(t.checkpoint.id);
    }
    expect(before).toEqual([ids[1], ids[0]]);
  });

  it("keeps an interrupted status when the writes race the checkpoints before them", async () => {
    // As LangGraph.js does: the put of one checkpoint is still in flight when the interrupt
    // of the next step is written. Twenty threads, because the race is one of timing.
    const meta = { source: "loop", step: 0, parents: {} } as CheckpointMetadata;
    const statuses = [];
    for (let i = 0; i < 20; i += 1) {
      const c0 = checkpoint(uuid6(-1));
      const c1 = checkpoint(uuid6(-1));
      const first = saver.put(config(`race-${i}`), c0, meta, {});
      const interrupted = saver.putWrites(
        config(`race-${i}`, c1.id),
        [["__interrupt__", [{ value: "?", id: "i" }]]],
        "task",
      );
      await saver.put(await first, c1, meta, {});
      await interrupted;
      statuses.push((await saver.threads.get(`race-${i}`)).status);
    }
    expect(statuses).toEqual(Array(20).fill("interrupted"));
  });

  it("returns pending writes in (task_path, task_id, idx) order with taskPath sent", async () => {
    const stored = await saver.put(config("order"), checkpoint(), { source: "loop", step: 0, parents: {} }, {});
    await saver.putWrites(
      stored,
      [
        ["c", "z1"],
        ["c", "z2"],
      ],
      "task-z",
      "~__pregel_pull, b",
    );
    await saver.putWrites(stored, [["c", "a1"]], "task-a", "~__pregel_pull, a");
    await saver.putWrites(stored, [["c", "input"]], "task-y", "");
    const tuple = await saver.getTuple(stored);
    expect(tuple?.pendingWrites).toEqual([
      ["task-y", "c", "input"],
      ["task-a", "c", "a1"],
      ["task-z", "c", "z1"],
      ["task-z", "c", "z2"],
    ]);
  });

  it("searches, counts, updates, copies, prunes and deletes threads", async () => {
    const first = await saver.threads.create("t1", { metadata: { team: "red", n: 1 } });
    expect(first).toMatchObject({ thread_id: "t1", metadata: { team: "red", n: 1 }, status: "idle" });
    await saver.threads.create("t2", { metadata: { team: "blue" }, ttlSeconds: 3600 });
    await expect(saver.threads.create("t1")).rejects.toMatchObject({ code: Code.AlreadyExists });
    expect((await saver.threads.create("t1", { ifExists: "do_nothing" })).thread_id).toBe("t1");
    expect(await saver.threads.count({ metadata: { team: "red" } })).toBe(1);
    const page = await saver.threads.search({ sortBy: "thread_id", sortOrder: "asc", limit: 1 });
    expect(page.threads.map((t) => t.thread_id)).toEqual(["t1"]);
    const next = await saver.threads.search({
      sortBy: "thread_id",
      sortOrder: "asc",
      limit: 1,
      pageToken: page.next_page_token,
    });
    expect(next.threads.map((t) => t.thread_id)).toEqual(["t2"]);
    expect(next.threads[0]?.ttl_seconds).toBe(3600);
    expect(next.threads[0]?.expires_at).toBeInstanceOf(Date);
    const updated = await saver.threads.update("t1", { metadata: { n: 2 } });
    expect(updated.metadata).toEqual({ team: "red", n: 2 });

    const run = (step: number, runId: string) =>
      ({ source: "loop", step, parents: {}, run_id: runId }) as CheckpointMetadata;
    const c1 = checkpoint(uuid6(-1));
    const one = await saver.put(config("t1"), c1, run(-1, "run-1"), {});
    const c2 = checkpoint(uuid6(-1));
    await saver.put(one, c2, run(0, "run-2"), {});
    const full = await saver.threads.get("t1");
    expect(full.checkpoint_count).toBe(2);
    expect(full.latest_checkpoint_id).toBe(c2.id);
    const history = [];
    for await (const t of saver.threads.history("t1", { values: false })) history.push(t.checkpoint.id);
    expect(history).toEqual([c2.id, c1.id]);

    const copy = await saver.threads.copy("t1", { metadata: { copied: true } });
    expect((await saver.threads.get(copy)).metadata).toEqual({ copied: true });
    expect((await saver.getTuple(config(copy)))?.checkpoint.id).toBe(c2.id);

    await saver.deleteForRuns(["run-2"]);
    expect((await saver.getTuple(config("t1")))?.checkpoint.id).toBe(c1.id);

    await saver.threads.prune([copy], { strategy: "keep_latest" });
    expect((await saver.threads.get(copy)).checkpoint_count).toBe(1);
    await saver.threads.delete("t1");
    await expect(saver.threads.get("t1")).rejects.toMatchObject({ code: Code.NotFound });
    await expect(saver.prune(["x"], "bogus" as "delete")).rejects.toThrow(TypeError);
  });

  it("prunes and deletes runs by more IDs than one call carries", async () => {
    const meta = (runId: string) => ({ source: "loop" as const, step: 0, parents: {}, run_id: runId });
    for (const threadId of ["first", "last"]) {
      const stored = await saver.put(config(threadId), checkpoint(), meta(`run-${threadId}`), {});
      await saver.put(stored, checkpoint(), meta(`run-${threadId}`), {});
    }
    const others = Array.from({ length: 1500 }, (_, i) => `other-${i}`);
    await saver.prune(["first", ...others, "last"], "keep_latest");
    for (const threadId of ["first", "last"]) expect((await saver.threads.get(threadId)).checkpoint_count).toBe(1);
    await saver.deleteForRuns(["run-first", ...others, "run-last"]);
    for (const threadId of ["first", "last"]) expect(await saver.getTuple(config(threadId))).toBeUndefined();
  });

  it("watches a thread's events and resumes after a cursor", async () => {
    const controller = new AbortController();
    // The namespace is the test's own, so its whole feed is this test's: start at the
    // beginning, so that a stream the server opens late still sees every event.
    const live = take(saver.threads.watch("w", { signal: controller.signal, fromBeginning: true }), 3);
    const stored = await saver.put(config("w"), checkpoint(), { source: "input", step: -1, parents: {} }, {});
    await saver.putWrites(stored, [["x", 1]], "task");
    const events = await live;
    expect(events.map((e) => e.kind)).toEqual(["thread_created", "checkpoint_added", "writes_added"]);
    expect(events[1]?.checkpoint_id).toBe(stored.configurable?.checkpoint_id);
    await saver.threads.update("w", { metadata: { seen: true } });
    // Resuming after the second event gives the third, then what came since: nothing twice.
    const resumed = await take(saver.threads.watch("w", { after: events[1]!.cursor }), 2);
    expect(resumed.map((e) => e.kind)).toEqual(["writes_added", "thread_updated"]);
    expect(resumed[0]?.cursor).toBe(events[2]?.cursor);
    const all = await take(saver.threads.watch(undefined, { fromBeginning: true }), 4);
    expect(all.map((e) => e.cursor)).toEqual([...events.map((e) => e.cursor), resumed[1]?.cursor]);
  });
});
