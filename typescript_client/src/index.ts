/**
 * A LangGraph.js checkpointer, thread catalog and change feed backed by the LangGraph
 * checkpoint service over gRPC.
 */
export { GrpcSaver, type GrpcSaverOptions, type PruneStrategyName, DEFAULT_TIMEOUT_MS } from "./saver.js";
export { GrpcSaverError, type StatusName } from "./errors.js";
export {
  ThreadsClient,
  type Event,
  type EventKindName,
  type Status,
  type SortBy,
  type Thread,
  type ThreadFilterOptions,
  type ThreadPage,
  type TtlOptions,
  type TtlStrategyName,
} from "./threads.js";
export { nextVersion } from "./convert.js";
export { type ConnectionOptions, DEFAULT_MAX_MESSAGE_BYTES } from "./transport.js";
