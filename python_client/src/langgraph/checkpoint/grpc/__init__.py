"""A LangGraph checkpointer backed by the LangGraph checkpoint service over gRPC."""

from langgraph.checkpoint.grpc._saver import GrpcSaver, GrpcSaverError

__all__ = ["GrpcSaver", "GrpcSaverError"]
