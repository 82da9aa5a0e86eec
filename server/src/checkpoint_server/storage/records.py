"""Plain data passed between the API layer and the store."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Value:
    """A channel's serialized value at one version."""

    channel: str
    version: str
    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Write:
    """One pending write of one task."""

    task_id: str
    task_path: str
    idx: int
    channel: str
    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A checkpoint to store: its identity, serialized body and the values that changed."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint_type: str
    checkpoint: bytes
    metadata: dict[str, Any]
    channel_versions: dict[str, str]
    new_values: list[Value]
    run_id: str | None
    delta_channels: list[str]


@dataclass(slots=True)
class StoredCheckpoint:
    """A checkpoint as read back, with its values and pending writes.

    ``thread_key`` is the store's internal key of the thread; page cursors carry it.
    """

    thread_id: str
    thread_key: int
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint_type: str
    checkpoint: bytes
    metadata_json: str
    channel_versions: dict[str, str]
    create_time: datetime
    values: list[Value] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What ListCheckpoints selects; ``after`` is the page cursor (exclusive)."""

    thread_id: str | None
    checkpoint_ns: str | None
    checkpoint_id: str | None
    metadata_filter: dict[str, Any]
    before_checkpoint_id: str | None
    limit: int
    after: tuple[str, int, str] | None


@dataclass(slots=True)
class DeltaHistory:
    """One channel's writes along a parent chain and the value the walk stopped at."""

    channel: str
    writes: list[Write] = field(default_factory=list)
    seed: Value | None = None


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    """The server's default time to live of threads that have none of their own.

    Attributes:
        seconds: The default TTL; None means threads live until deleted.
        strategy: ``delete`` or ``keep_latest``.
    """

    seconds: int | None = None
    strategy: str = "delete"
