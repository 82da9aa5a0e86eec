import { randomUUID } from "node:crypto";
import { validate } from "@langchain/langgraph-checkpoint-validation";
import { GrpcSaver } from "../src/index.js";
import { SERVERS } from "./servers.js";

// LangGraph.js's conformance suite, once per database. Each checkpointer gets a namespace
// of its own, so the suite's threads never meet another run's.
for (const server of SERVERS) {
  validate({
    checkpointerName: `GrpcSaver on ${server.database}`,
    createCheckpointer: () => new GrpcSaver(server.target, { namespace: `validation-${randomUUID()}` }),
    destroyCheckpointer: (saver) => saver.close(),
  });
}
