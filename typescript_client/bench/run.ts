/**
 * The TypeScript GrpcSaver against LangGraph.js's MemorySaver and PostgresSaver, on one graph.
 *
 *   cd typescript_client && npm run bench [-- --rounds 3 --turns 4]
 *
 * The workload is the Python benchmark's (bench/graph.py): each turn of a thread sends a human
 * message that runs `respond` and stops at an interrupt in `review`, then resumes with
 * Command to run `review` and `finalize`; `messages` grows every turn. It runs one thread at a
 * time (concurrency 1) and 32 threads at once on one saver (concurrency 32), and reports
 * super-steps (checkpoints written) per second. Savers take turns within each round (A, B, C,
 * A, B, C, ...) so that a noisy neighbour on a shared machine hurts all of them alike; the
 * ratios use each saver's median round.
 *
 * The script starts its own checkpoint server (the repository's .venv, or LGCP_PYTHON) on a
 * fresh PostgreSQL database and a fresh SQLite file, and gives PostgresSaver another fresh
 * database of the same cluster (BENCH_POSTGRES_URL, default the test cluster).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { AIMessage, HumanMessage } from "@langchain/core/messages";
import { Annotation, Command, END, MessagesAnnotation, START, StateGraph, interrupt } from "@langchain/langgraph";
import { type BaseCheckpointSaver, MemorySaver } from "@langchain/langgraph-checkpoint";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import pg from "pg";
import { GrpcSaver } from "../src/index.js";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    turns: { type: "string", default: "4" },
    "serial-threads": { type: "string", default: "6" },
  },
});
const ROUNDS = Number(args.rounds);
const TURNS = Number(args.turns);
const SERIAL_THREADS = Number(args["serial-threads"]);
const CONCURRENCY = 32;
const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const PYTHON = process.env.LGCP_PYTHON ?? resolve(import.meta.dirname, "../../.venv/bin/python");
const DRAFT =
  "Here is a draft answer. It restates the question, lists the assumptions that were made, " +
  "and proposes two options with their trade-offs so that a reviewer can pick one. ";

const State = Annotation.Root({ ...MessagesAnnotation.spec, turn: Annotation<number>() });

function buildGraph(saver: BaseCheckpointSaver) {
  return new StateGraph(State)
    .addNode("respond", (state) => {
      const turn = (state.turn ?? 0) + 1;
      return { messages: [new AIMessage(`[turn ${turn}] ${DRAFT}${DRAFT}`)], turn };
    })
    .addNode("review", (state) => {
      const feedback = interrupt({ question: "Approve the draft?", turn: state.turn ?? 0 });
      return { messages: [new HumanMessage(String(feedback))] };
    })
    .addNode("finalize", () => ({ messages: [new AIMessage(`Final answer after review: ${DRAFT}`)] }))
    .addEdge(START, "respond")
    .addEdge("respond", "review")
    .addEdge("review", "finalize")
    .addEdge("finalize", END)
    .compile({ checkpointer: saver });
}

interface Contender {
  name: string;
  saver: BaseCheckpointSaver;
  close: () => Promise<void>;
}

/** Counts checkpoints written: the super-steps of the run. */
function counting(saver: BaseCheckpointSaver): { saver: BaseCheckpointSaver; steps: () => number } {
  let steps = 0;
  const put = saver.put.bind(saver);
  saver.put = (...call: Parameters<typeof put>) => {
    steps += 1;
    return put(...call);
  };
  return { saver, steps: () => steps };
}

async function thread(graph: ReturnType<typeof buildGraph>, threadId: string): Promise<void> {
  const config = { configurable: { thread_id: threadId } };
  for (let turn = 0; turn < TURNS; turn += 1) {
    await graph.invoke({ messages: [new HumanMessage(`question ${turn}`)] }, config);
    await graph.invoke(new Command({ resume: "approved" }), config);
  }
}

/** Super-steps per second of `threads` threads, `concurrency` at a time. */
async function measure(contender: Contender, concurrency: number, threads: number): Promise<number> {
  const { saver, steps } = counting(contender.saver);
  const graph = buildGraph(saver);
  const ids = Array.from({ length: threads }, () => randomUUID());
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < ids.length) await thread(graph, ids[next++]!);
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return steps() / seconds;
}

// The server logs to a file, as a deployed one does to its collector: piped into this
// process, every access line would cost the saver under test a turn of the event loop.
async function serve(databaseUrl: string, logPath: string): Promise<{ child: ChildProcess; target: string }> {
  const log = openSync(logPath, "w");
  const child = spawn(
    PYTHON,
    ["-m", "checkpoint_server", "serve", "--database-url", databaseUrl, "--listen", "127.0.0.1:0"],
    { stdio: ["ignore", "ignore", log] },
  );
  closeSync(log);
  for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
    const text = readFileSync(logPath, "utf8");
    const port = /serving \S+ on port (\d+)/.exec(text)?.[1];
    if (port) return { child, target: `127.0.0.1:${port}` };
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}):\n${text}`);
    await new Promise((done) => setTimeout(done, 50));
  }
  child.kill("SIGKILL");
  throw new Error(`server did not start:\n${readFileSync(logPath, "utf8")}`);
}

async function stopServer(child: ChildProcess): Promise<void> {
  await new Promise<void>((done) => {
    child.once("exit", () => done());
    child.kill("SIGTERM");
  });
}

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function databaseUrl(name: string): string {
  return `${POSTGRES_URL.slice(0, POSTGRES_URL.lastIndexOf("/"))}/${name}`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const suffix = randomUUID().replaceAll("-", "").slice(0, 12);
  const grpcDb = `lgcp_bench_ts_grpc_${suffix}`;
  const officialDb = `lgcp_bench_ts_pg_${suffix}`;
  const sqliteDir = mkdtempSync(join(tmpdir(), "lgcp-bench-ts-"));
  // Names are generated here, never taken from input.
  await admin(`CREATE DATABASE "${grpcDb}"`);
  await admin(`CREATE DATABASE "${officialDb}"`);
  const servers: ChildProcess[] = [];
  const contenders: Contender[] = [];
  try {
    const onPostgres = await serve(databaseUrl(grpcDb), join(sqliteDir, "server-postgres.log"));
    servers.push(onPostgres.child);
    const onSqlite = await serve(
      `sqlite:///${join(sqliteDir, "checkpoints.db")}`,
      join(sqliteDir, "server-sqlite.log"),
    );
    servers.push(onSqlite.child);
    const official = PostgresSaver.fromConnString(databaseUrl(officialDb));
    await official.setup();
    const grpcPostgres = new GrpcSaver(onPostgres.target, { namespace: "bench" });
    const grpcSqlite = new GrpcSaver(onSqlite.target, { namespace: "bench" });
    contenders.push(
      { name: "GrpcSaver (PostgreSQL)", saver: grpcPostgres, close: async () => grpcPostgres.close() },
      { name: "GrpcSaver (SQLite)", saver: grpcSqlite, close: async () => grpcSqlite.close() },
      { name: "MemorySaver", saver: new MemorySaver(), close: async () => undefined },
      { name: "PostgresSaver", saver: official, close: () => official.end() },
    );
    // One warm-up thread each: connections, JIT, prepared statements.
    for (const contender of contenders) await measure(contender, 1, 1);
    const results = new Map<string, { serial: number[]; concurrent: number[] }>();
    for (const c of contenders) results.set(c.name, { serial: [], concurrent: [] });
    for (let round = 1; round <= ROUNDS; round += 1) {
      for (const c of contenders) {
        results.get(c.name)!.serial.push(await measure(c, 1, SERIAL_THREADS));
        process.stderr.write(`round ${round} ${c.name} concurrency 1 done\n`);
      }
      for (const c of contenders) {
        results.get(c.name)!.concurrent.push(await measure(c, CONCURRENCY, CONCURRENCY));
        process.stderr.write(`round ${round} ${c.name} concurrency ${CONCURRENCY} done\n`);
      }
    }
    const rows = contenders.map((c) => {
      const r = results.get(c.name)!;
      return { name: c.name, serial: median(r.serial), concurrent: median(r.concurrent) };
    });
    console.log(`LangGraph.js graph super-steps/s, median of ${ROUNDS} interleaved rounds (${TURNS} turns a thread)\n`);
    console.log(`| saver | concurrency 1 | concurrency ${CONCURRENCY} |`);
    console.log("|---|---:|---:|");
    for (const row of rows) console.log(`| ${row.name} | ${row.serial.toFixed(0)} | ${row.concurrent.toFixed(0)} |`);
    console.log("\n| ratio | concurrency 1 | concurrency 32 |");
    console.log("|---|---:|---:|");
    const by = (name: string) => rows.find((r) => r.name === name)!;
    for (const grpc of ["GrpcSaver (PostgreSQL)", "GrpcSaver (SQLite)"]) {
      for (const other of ["MemorySaver", "PostgresSaver"]) {
        const a = by(grpc);
        const b = by(other);
        console.log(
          `| ${grpc} ÷ ${other} | ${(a.serial / b.serial).toFixed(2)}× | ${(a.concurrent / b.concurrent).toFixed(2)}× |`,
        );
      }
    }
  } finally {
    for (const c of contenders) await c.close();
    for (const child of servers) await stopServer(child);
    rmSync(sqliteDir, { recursive: true, force: true });
    await admin(`DROP DATABASE IF EXISTS "${grpcDb}" WITH (FORCE)`);
    await admin(`DROP DATABASE IF EXISTS "${officialDb}" WITH (FORCE)`);
  }
}

await main();
