"""Persistence of checkpoints through SQLAlchemy; knows nothing of gRPC."""

from checkpoint_server.storage.checkpoints import CheckpointStore
from checkpoint_server.storage.database import (
    Database,
    describe_error,
    open_database,
    unavailable,
)
from checkpoint_server.storage.events import Cursor, Event, EventLog
from checkpoint_server.storage.keys import token_key
from checkpoint_server.storage.leases import Granted, LeaseStore
from checkpoint_server.storage.lifecycle import ThreadLifecycle
from checkpoint_server.storage.notify import listen
from checkpoint_server.storage.records import (
    CheckpointRecord,
    DeltaHistory,
    Lease,
    ListQuery,
    StoredCheckpoint,
    ThreadFilter,
    ThreadPage,
    ThreadRecord,
    TtlPolicy,
    Value,
    Write,
    WritesRecord,
)
from checkpoint_server.storage.threads import ThreadCatalog

__all__ = [
    "CheckpointRecord",
    "CheckpointStore",
    "Cursor",
    "Database",
    "DeltaHistory",
    "Event",
    "EventLog",
    "Granted",
    "Lease",
    "LeaseStore",
    "ListQuery",
    "StoredCheckpoint",
    "ThreadCatalog",
    "ThreadFilter",
    "ThreadLifecycle",
    "ThreadPage",
    "ThreadRecord",
    "TtlPolicy",
    "Value",
    "Write",
    "WritesRecord",
    "describe_error",
    "listen",
    "open_database",
    "token_key",
    "unavailable",
]
