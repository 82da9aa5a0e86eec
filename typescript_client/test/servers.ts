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
