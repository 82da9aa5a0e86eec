/**
 * The LangGraph.js half of tests/test_cross_language.py: one turn of the same chat graph
 * the Python test runs, or what LangGraph.js reads of the thread, printed as JSON.
 *
 *   tsx test/cross/chat.ts turn TARGET NAMESPACE THREAD TEXT
 *   tsx test/cross/chat.ts read TARGET NAMESPACE THREAD
 */
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import { type Event, GrpcSaver } from "../../src/index.js";

const [command, target, namespace, threadId, text] = process.argv.slice(2);
if (!command || !target || namespace === undefined || !threadId) throw new Error("usage: see the file's comment");
const saver = new GrpcSaver(target, { namespace });
const config = { configurable: { thread_id: threadId } };

// The Python test's graph: the reply numbers the turn by the human messages it has seen.
const graph = new StateGraph(MessagesAnnotation)
  .addNode("reply", (state) => {
    const turn = state.messages.filter((m) => m instanceof HumanMessage).length;
    const last = state.messages[state.messages.length - 1];
    return { messages: [new AIMessage(`turn ${turn}: ${String(last?.content)}`)] };
  })
  .addEdge(START, "reply")
  .compile({ checkpointer: saver });

function messages(list: BaseMessage[]) {
  return list.map((m) => ({ type: m.getType(), content: m.content, id: m.id ?? null }));
}

try {
  if (command === "turn") {
    const result = await graph.invoke({ messages: [new HumanMessage(text ?? "")] }, config);
    console.log(JSON.stringify({ messages: messages(result.messages) }));
  } else if (command === "read") {
    const state = await graph.getState(config);
    const history = [];
    for await (const tuple of saver.threads.history(threadId, { values: false })) {
      history.push({
        checkpoint_id: tuple.checkpoint.id,
        parent_checkpoint_id: tuple.parentConfig?.configurable?.checkpoint_id ?? null,
        step: tuple.metadata?.step,
        source: tuple.metadata?.source,
      });
    }
    const thread = await saver.threads.get(threadId);
    const events: Event[] = [];
    for await (const event of saver.threads.watch(threadId, { fromBeginning: true })) {
      events.push(event);
      if (event.checkpoint_id === thread.latest_checkpoint_id && event.kind === "checkpoint_added") break;
    }
    console.log(
      JSON.stringify({
        messages: messages(state.values.messages),
        history,
        thread: { status: thread.status, metadata: thread.metadata, latest_checkpoint_id: thread.latest_checkpoint_id },
        events: events.map((e) => ({ cursor: e.cursor, kind: e.kind, checkpoint_id: e.checkpoint_id ?? null })),
      }),
    );
  } else {
    throw new Error(`unknown command ${command}`);
  }
} finally {
  saver.close();
}
