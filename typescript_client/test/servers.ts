import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";

/**
 * The servers the tests run against, given by tests/test_typescript.py in the environment:
 * LGCP_SERVERS is a JSON object from database name to `{ target, database_url }`.
 */
export interface TestServer {
  database: string;
  target: string;
  database_url: string;
}

function read(): TestServer[] {
  const raw = process.env.LGCP_SERVERS;
  if (!raw) throw new Error("LGCP_SERVERS is not set: run the TypeScript tests through tests/test_typescript.py");
  const servers = JSON.parse(raw) as Record<string, { target: string; database_url: string }>;
  return Object.entries(servers).map(([database, s]) => ({ database, ...s }));
}

export const SERVERS: TestServer[] = read();
/** The Python interpreter that has the server installed. */
export const PYTHON = process.env.LGCP_PYTHON ?? "python3";

/** A TCP port nobody listens on now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** A server of the test's own on the shared database, serving once its log says so. */
export function serve(databaseUrl: string, port: number, ...extra: string[]): Promise<ChildProcess> {
  const child = spawn(
    PYTHON,
    ["-m", "checkpoint_server", "serve", "--database-url", databaseUrl, "--listen", `127.0.0.1:${port}`, ...extra],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  return new Promise((resolve, reject) => {
    let log: string | undefined = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      if (log === undefined) return; // serving: the access log is not kept
      log += chunk.toString();
      if (/serving \S+ on port/.test(log)) {
        log = undefined;
        resolve(child);
      }
    });
    child.once("exit", (code) => reject(new Error(`server exited (${code}) before serving:\n${log}`)));
  });
}

/** Stops a server started by `serve`, as an orchestrator would (SIGTERM). */
export function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}
