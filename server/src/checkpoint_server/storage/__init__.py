"""Persistence of checkpoints through SQLAlchemy; knows nothing of gRPC."""

from checkpoint_server.storage.database import Database, open_database
from checkpoint_server.storage.records import (
    CheckpointRecord,
    DeltaHistory,
    ListQuery,
    StoredCheckpoint,
    Value,
    Write,
)
from checkpoint_server.storage.store import CheckpointStore

__all__ = [
    "CheckpointRecord",
    "CheckpointStore",
    "Database",
    "DeltaHistory",
    "ListQuery",
    "StoredCheckpoint",
    "Value",
    "Write",
    "open_database",
]
