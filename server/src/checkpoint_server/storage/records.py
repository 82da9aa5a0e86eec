"""Plain data passed between the API layer and the store."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease a writer carries: its ID and fencing number (see storage/leases.py)."""

    lease_id: str
    fencing: int


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
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class WritesRecord:
    """Pending writes of one task (or several) to store against a checkpoint."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    writes: list[Write]
    lease: Lease | None = None


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
    values: bool = True
    channels: tuple[str, ...] = ()


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


@dataclass(slots=True)
class ThreadRecord:
    """A thread as read back. The counts are None unless the full view was asked for."""

    thread_id: str
    metadata_json: str
    create_time: datetime
    update_time: datetime
    status: str
    latest_checkpoint_id: str | None
    ttl_seconds: int | None
    ttl_strategy: str | None
    expire_epoch: float | None
    checkpoint_count: int | None = None
    values_bytes: int | None = None
    writes_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ThreadFilter:
    """Which threads SearchThreads and CountThreads select."""

    metadata: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class ThreadPage:
    """Where a page of SearchThreads starts.

    Attributes:
        sort_by: ``thread_id``, ``create_time`` or ``update_time``.
        descending: The direction.
        limit: The page size.
        as_of: The time of the listing's first page: later threads and updates are left out.
        after: The sort value and thread ID of the previous page's last thread.
        full: Whether to count checkpoints and bytes.
    """

    sort_by: str
    descending: bool
    limit: int
    as_of: datetime
    after: tuple[Any, str] | None = None
    full: bool = False


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What became of a batch of records (``CheckpointStore.put_batch``).

    Attributes:
        errors: Each record's error, in the batch's order, or None where it was stored.
        alone: How many records were not stored with the batch's transaction: tried again on
            their own (or not at all, once the database was found down).

    """

    errors: list[Exception | None]
    alone: int
