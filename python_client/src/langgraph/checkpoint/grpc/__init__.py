"""A LangGraph checkpointer backed by the LangGraph checkpoint service over gRPC."""

from langgraph.checkpoint.grpc._saver import GrpcSaver, GrpcSaverError
from langgraph.checkpoint.grpc._threads import (
    SyncThreadsClient,
    Thread,
    ThreadPage,
    ThreadsClient,
)

__all__ = [
    "GrpcSaver",
    "GrpcSaverError",
    "SyncThreadsClient",
    "Thread",
    "ThreadPage",
    "ThreadsClient",
]
