import { randomUUID } from "node:crypto";
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Annotation, Command, END, MessagesAnnotation, START, StateGraph, interrupt } from "@langchain/langgraph";
import { GrpcSaver } from "../src/index.js";
import { SERVERS } from "./servers.js";

const Items = Annotation.Root({
  items: Annotation<string[]>({ reducer: (a, b) => a.concat(b), default: () => [] }),
});

function chatbot(saver: GrpcSaver) {
  // Answers with the number of messages it has seen, so memory shows in the reply.
  return new StateGraph(MessagesAnnotation)
    .addNode("bot", (state) => ({ messages: [new AIMessage(`seen ${state.messages.length}`)] }))
    .addEdge(START, "bot")
    .compile({ checkpointer: saver });
}

function text(messages: BaseMessage[]): string[] {
  return messages.map((m) => String(m.content));
}

describe.each(SERVERS)("LangGraph.js graphs on $database", (server) => {
  let saver: GrpcSaver;
  beforeAll(() => {
    saver = new GrpcSaver(server.target, { namespace: `graphs-${randomUUID()}` });
  });
  afterAll(() => saver.close());

  it("keeps memory per thread", async () => {
    const graph = chatbot(saver);
    const one = { configurable: { thread_id: "one" } };
    const two = { configurable: { thread_id: "two" } };
    await graph.invoke({ messages: [new HumanMessage("hi")] }, one);
    const again = await graph.invoke({ messages: [new HumanMessage("again")] }, one);
    const other = await graph.invoke({ messages: [new HumanMessage("hello")] }, two);
    expect(text(again.messages)).toEqual(["hi", "seen 1", "again", "seen 3"]);
    expect(text(other.messages)).toEqual(["hello", "seen 1"]);
    // A new saver (another process, say) reads the same thread back.
    const fresh = new GrpcSaver(server.target, { namespace: saver.namespace });
    try {
      const state = await chatbot(fresh).getState(one);
      expect(text(state.values.messages)).toEqual(["hi", "seen 1", "again", "seen 3"]);
      expect(state.values.messages[0]).toBeInstanceOf(HumanMessage);
    } finally {
      fresh.close();
    }
  });

  it("stops before a node, takes a state update, and resumes", async () => {
    const graph = new StateGraph(Items)
      .addNode("draft", () => ({ items: ["draft"] }))
      .addNode("publish", (state) => ({ items: [`published ${state.items.join("+")}`] }))
      .addEdge(START, "draft")
      .addEdge("draft", "publish")
      .addEdge("publish", END)
      .compile({ checkpointer: saver, interruptBefore: ["publish"] });
    const config = { configurable: { thread_id: "review" } };
    await graph.invoke({ items: ["start"] }, config);
    const paused = await graph.getState(config);
    expect(paused.next).toEqual(["publish"]);
    await graph.updateState(config, { items: ["edited"] });
    const done = await graph.invoke(null, config);
    expect(done.items).toEqual(["start", "draft", "edited", "published start+draft+edited"]);
    expect((await graph.getState(config)).next).toEqual([]);
  });

  it("pauses at interrupt() and resumes with Command", async () => {
    const graph = new StateGraph(Items)
      .addNode("ask", () => {
        const answer = interrupt({ question: "name?" }) as string;
        return { items: [`hello ${answer}`] };
      })
      .addEdge(START, "ask")
      .compile({ checkpointer: saver });
    const config = { configurable: { thread_id: "ask" } };
    const first = (await graph.invoke({ items: [] }, config)) as { __interrupt__?: { value: unknown }[] };
    expect(first.__interrupt__?.[0]?.value).toEqual({ question: "name?" });
    const state = await graph.getState(config);
    expect(state.tasks[0]?.interrupts[0]?.value).toEqual({ question: "name?" });
    expect((await saver.threads.get("ask")).status).toBe("interrupted");
    const done = await graph.invoke(new Command({ resume: "Ada" }), config);
    expect(done.items).toEqual(["hello Ada"]);
    expect((await saver.threads.get("ask")).status).toBe("idle");
  });

  it("lists history, replays and forks from an earlier checkpoint", async () => {
    const graph = new StateGraph(Items)
      .addNode("a", () => ({ items: ["a"] }))
      .addNode("b", () => ({ items: ["b"] }))
      .addEdge(START, "a")
      .addEdge("a", "b")
      .compile({ checkpointer: saver });
    const config = { configurable: { thread_id: "history" } };
    await graph.invoke({ items: ["x"] }, config);
    const history = [];
    for await (const snapshot of graph.getStateHistory(config)) history.push(snapshot);
    expect(history.map((s) => s.metadata?.step)).toEqual([2, 1, 0, -1]);
    const beforeB = history.find((s) => s.next.includes("b"));
    expect(beforeB?.values.items).toEqual(["x", "a"]);
    // Replay from before "b": only "b" runs again, on a new branch of the same thread.
    const replayed = await graph.invoke(null, beforeB!.config);
    expect(replayed.items).toEqual(["x", "a", "b"]);
    // Fork: change the state at that checkpoint, then run on from the fork.
    const fork = await graph.updateState(beforeB!.config, { items: ["forked"] });
    const forked = await graph.invoke(null, fork);
    expect(forked.items).toEqual(["x", "a", "forked", "b"]);
    expect((await graph.getState(config)).values.items).toEqual(["x", "a", "forked", "b"]);
  });

  it("checkpoints subgraphs in their own checkpoint_ns", async () => {
    const child = new StateGraph(Items)
      .addNode("inner", () => {
        const ok = interrupt("approve?") as boolean;
        return { items: [ok ? "inner approved" : "inner rejected"] };
      })
      .addEdge(START, "inner")
      .compile();
    const parent = new StateGraph(Items)
      .addNode("child", child)
      .addNode("after", () => ({ items: ["after"] }))
      .addEdge(START, "child")
      .addEdge("child", "after")
      .compile({ checkpointer: saver });
    const config = { configurable: { thread_id: "subgraph" } };
    await parent.invoke({ items: ["start"] }, config);
    const state = await parent.getState(config, { subgraphs: true });
    const childState = state.tasks[0]?.state as { values: { items: string[] }; next: string[] } | undefined;
    expect(childState?.next).toEqual(["inner"]);
    const namespaces = new Set<string>();
    for await (const tuple of saver.list({ configurable: { thread_id: "subgraph" } })) {
      namespaces.add(String(tuple.config.configurable?.checkpoint_ns));
    }
    expect(namespaces.has("")).toBe(true);
    expect([...namespaces].some((ns) => ns.startsWith("child:"))).toBe(true);
    const done = await parent.invoke(new Command({ resume: true }), config);
    // The child returns its whole state, which the parent's reducer appends: "start" twice.
    expect(done.items).toEqual(["start", "start", "inner approved", "after"]);
  });
});
