import { randomUUID } from "node:crypto";
import { AIMessage, HumanMessage } from "@langchain/core/messages";
import { MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import { type Event, GrpcSaver } from "../src/index.js";
import { SERVERS, freePort, serve, stop } from "./servers.js";

describe.each(SERVERS)("a server restart on $database", (server) => {
  it("is survived by a running client: calls retry, the watch resumes", { timeout: 60_000 }, async () => {
    const port = await freePort();
    let process = await serve(server.database_url, port);
    // Enough attempts to outlast the server's start-up (a Python process: a second or two).
    const saver = new GrpcSaver(`grpc://127.0.0.1:${port}`, { namespace: `restart-${randomUUID()}`, maxAttempts: 40 });
    const graph = new StateGraph(MessagesAnnotation)
      .addNode("bot", (state) => ({ messages: [new AIMessage(`seen ${state.messages.length}`)] }))
      .addEdge(START, "bot")
      .compile({ checkpointer: saver });
    const config = { configurable: { thread_id: "r" } };
    const controller = new AbortController();
    const seen: Event[] = [];
    const watching = (async () => {
      // The namespace is the test's own: from the beginning, a late stream misses nothing.
      for await (const event of saver.threads.watch("r", { signal: controller.signal, fromBeginning: true })) {
        seen.push(event);
      }
    })();
    try {
      await graph.invoke({ messages: [new HumanMessage("before")] }, config);
      await stop(process);
      // The call starts while nothing listens and succeeds once the server is back.
      const during = graph.invoke({ messages: [new HumanMessage("during")] }, config);
      process = await serve(server.database_url, port);
      const after = await during;
      expect(after.messages.map((m) => String(m.content))).toEqual(["before", "seen 1", "during", "seen 3"]);
      const deadline = Date.now() + 20_000;
      while (seen.filter((e) => e.kind === "checkpoint_added").length < 6 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // Three checkpoints a turn (input, start, bot): none lost, none twice across the restart.
      expect(seen.filter((e) => e.kind === "checkpoint_added")).toHaveLength(6);
      expect(new Set(seen.map((e) => e.cursor)).size).toBe(seen.length);
    } finally {
      controller.abort();
      await watching.catch(() => undefined);
      saver.close();
      await stop(process);
    }
  });
});
