"""A LangGraph checkpointer backed by the LangGraph checkpoint service over gRPC."""

from langgraph.checkpoint.grpc._errors import GrpcSaverError
from langgraph.checkpoint.grpc._json import JsonSerializer
from langgraph.checkpoint.grpc._lease import ThreadLease
from langgraph.checkpoint.grpc._saver import GrpcSaver
from langgraph.checkpoint.grpc._security import TlsConfig
from langgraph.checkpoint.grpc._threads import (
    CheckpointSummary,
    Event,
    SyncThreadsClient,
    Thread,
    ThreadPage,
    ThreadsClient,
)

__all__ = [
    "CheckpointSummary",
    "Event",
    "GrpcSaver",
    "GrpcSaverError",
    "JsonSerializer",
    "SyncThreadsClient",
    "Thread",
    "ThreadLease",
    "ThreadPage",
    "ThreadsClient",
    "TlsConfig",
]
