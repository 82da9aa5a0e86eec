"""Thread leases: one writer per thread, fenced by a number that grows with every holder.

A lease row per (namespace, thread_id) holds the current lease ID (NULL once released), its
fencing number and its expiry. A write is admitted when the lease it carries is the held one,
or when it carries none and none is held; an expired lease is held by nobody. The rule is
written twice, once here (SQLite, and DeleteThread on both databases) and once in PL/pgSQL
(migration 0006, PostgreSQL's hot path); the refusal message is built here for both.

On PostgreSQL the check takes a shared advisory lock on the thread for its transaction and
``acquire`` an exclusive one, so that a new holder waits for the writes admitted before it.
On SQLite every write transaction is ``BEGIN IMMEDIATE``, which serializes them anyway.

Rows are dropped by the sweeper (``LeaseStore.forget``) only for threads that no longer
exist, an hour after their last lease was over, and the namespace's fencing floor keeps the
greatest number dropped: a thread's fencing numbers never go back, whatever was dropped.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint_server.errors import FailedPrecondition
from checkpoint_server.storage.database import Database
from checkpoint_server.storage.dialect import insert_for
from checkpoint_server.storage.models import LeaseFloorRow, LeaseRow, ThreadRow
from checkpoint_server.storage.records import Lease

# The SQLSTATE that lgcp_check_lease raises (class LG: ours, not PostgreSQL's).
REFUSED_SQLSTATE = "LGL01"
_THREAD_LOCK = "SELECT pg_advisory_xact_lock{mode}(hashtext(:namespace), hashtext(:thread_id))"
_TRY_THREAD_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext(:namespace), hashtext(:thread_id))"
# How long the lease row of a thread that no longer exists stays after its last lease ended.
# The floor keeps numbers growing without it; the hour keeps them consecutive (one greater,
# as the proto says) for a thread deleted and written again soon after, and keeps the sweeper
# off rows a client may still be using.
FORGET_AFTER_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Granted:
    """A lease that was acquired or renewed, and when it expires (seconds since the epoch)."""

    lease: Lease
    expire_epoch: float


@dataclass(frozen=True, slots=True)
class _Held:
    lease_id: str | None
    fencing: int | None
    expire_epoch: float | None

    def holder(self, now_epoch: float) -> str | None:
        """The lease ID that holds the thread now, if any."""
        if self.lease_id is None or self.expire_epoch is None or self.expire_epoch <= now_epoch:
            return None
        return self.lease_id


def call_arguments(carried: Lease | None) -> dict[str, Any]:
    """The arguments of lgcp_check_lease besides the thread's (namespace, thread_id, now)."""
    if carried is None:
        return {"lease_id": None, "fencing": None}
    return {"lease_id": carried.lease_id, "fencing": carried.fencing}


def refusal(error: DBAPIError, thread_id: str, carried: Lease | None) -> FailedPrecondition | None:
    """The refusal that lgcp_check_lease raised, or None for any other database error."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) != REFUSED_SQLSTATE:
        return None
    detail = getattr(getattr(orig, "diag", None), "message_detail", None)
    row = json.loads(detail or "{}")
    held = _Held(row.get("lease_id"), row.get("fencing"), row.get("expire_epoch"))
    return refused(thread_id, held, carried)


def refused(thread_id: str, held: _Held, carried: Lease | None) -> FailedPrecondition:
    """The error of a write to ``thread_id`` that the lease ``held`` does not admit."""
    if carried is None:
        return FailedPrecondition(f"{_state(thread_id, held)}; the request carries no lease")
    return FailedPrecondition(
        f"{_state(thread_id, held)}; the request's lease {carried.lease_id!r} "
        f"(fencing {carried.fencing}) was released, expired or taken over"
    )


def _state(thread_id: str, held: _Held) -> str:
    holder = held.holder(time.time())
    if holder is None or held.expire_epoch is None:
        return f"thread {thread_id!r} has no held lease (last fencing {held.fencing or 0})"
    expiry = datetime.fromtimestamp(held.expire_epoch, UTC).isoformat(timespec="milliseconds")
    return (
        f"thread {thread_id!r} is leased by lease {holder!r} (fencing {held.fencing}) "
        f"until {expiry}"
    )


def admits(held: _Held, carried: Lease | None, now_epoch: float) -> bool:
    """Whether a write carrying ``carried`` may write the thread ``held`` describes."""
    holder = held.holder(now_epoch)
    if carried is None:
        return holder is None
    return holder == carried.lease_id and held.fencing == carried.fencing


async def check(
    conn: AsyncConnection, dialect: str, namespace: str, thread_id: str, carried: Lease | None
) -> None:
    """Refuses, in the caller's write transaction, a write the thread's lease does not admit.

    Raises:
        FailedPrecondition: Naming the holder's lease and its expiry; nothing was written.

    """
    await _lock_thread(conn, dialect, namespace, thread_id, exclusive=False)
    held = await _read(conn, namespace, thread_id)
    if not admits(held, carried, time.time()):
        raise refused(thread_id, held, carried)


def check_row(
    thread_id: str, row: tuple[str | None, int | None, float | None] | None, carried: Lease | None
) -> None:
    """``check`` of a lease row already read: (lease_id, fencing, expire_epoch), or None.

    SQLite's hot writes read the row on the writer's own thread (storage/sqlite_writes.py).

    Raises:
        FailedPrecondition: As ``check``.

    """
    held = _Held(None, None, None) if row is None else _Held(*row)
    if not admits(held, carried, time.time()):
        raise refused(thread_id, held, carried)


def busy() -> ColumnElement[bool]:
    """Whether a thread's lease is held now (its shown status is then ``busy``).

    Parameters: ``p_now_epoch``, as ``queries.visible``.
    """
    return exists(
        select(1).where(
            LeaseRow.namespace == ThreadRow.namespace,
            LeaseRow.thread_id == ThreadRow.thread_id,
            LeaseRow.lease_id.is_not(None),
            LeaseRow.expire_epoch > bindparam("p_now_epoch", type_=LeaseRow.expire_epoch.type),
        )
    )


class LeaseStore:
    """Acquires, renews and releases thread leases, each in one transaction."""

    def __init__(self, database: Database) -> None:
        """Wraps an open database."""
        self._db = database

    async def acquire(self, namespace: str, thread_id: str, ttl_seconds: float) -> Granted:
        """Takes the thread's lease with a new ID and the next fencing number.

        Raises:
            FailedPrecondition: Another lease is held; the message names it and its expiry.

        """
        async with self._db.write(namespace, wake=False) as conn:
            await _lock_thread(conn, self._db.dialect, namespace, thread_id, exclusive=True)
            await conn.execute(self._insert_missing(namespace, thread_id))
            held = await _read(conn, namespace, thread_id, for_update=True)
            now = time.time()
            if held.holder(now) is not None:
                raise FailedPrecondition(
                    f"{_state(thread_id, held)}: wait until it is released or expires"
                )
            granted = Granted(Lease(uuid.uuid4().hex, (held.fencing or 0) + 1), now + ttl_seconds)
            await conn.execute(
                _row(namespace, thread_id).values(
                    lease_id=granted.lease.lease_id,
                    fencing=granted.lease.fencing,
                    expire_epoch=granted.expire_epoch,
                )
            )
        return granted

    async def renew(
        self, namespace: str, thread_id: str, lease: Lease, ttl_seconds: float
    ) -> Granted:
        """Extends a held lease to ``ttl_seconds`` from now.

        Raises:
            FailedPrecondition: The lease is not held any more.

        """
        async with self._db.write(namespace, wake=False) as conn:
            now = time.time()
            held = await _read(conn, namespace, thread_id, for_update=True)
            if not admits(held, lease, now):
                raise refused(thread_id, held, lease)
            granted = Granted(lease, now + ttl_seconds)
            await conn.execute(_row(namespace, thread_id).values(expire_epoch=granted.expire_epoch))
        return granted

    async def release(self, namespace: str, thread_id: str, lease: Lease) -> None:
        """Releases the lease if it is the held one; otherwise changes nothing."""
        async with self._db.write(namespace, wake=False) as conn:
            await conn.execute(
                _row(namespace, thread_id)
                .where(LeaseRow.lease_id == lease.lease_id, LeaseRow.fencing == lease.fencing)
                .values(lease_id=None)
            )

    async def forget(
        self, *, after_seconds: float = FORGET_AFTER_SECONDS, limit: int = 1000
    ) -> int:
        """Drops up to ``limit`` lease rows nobody needs any more; returns how many.

        A row goes when its thread does not exist (deleted, expired, or never written) and its
        last lease was over (released or expired) ``after_seconds`` ago. The row of a thread
        that exists stays, however old: it is bounded by the catalog. The namespace's floor is
        raised to the greatest fencing number dropped, in the same transaction, and a thread's
        next lease row starts from the floor, so numbers keep growing across a drop.
        """
        unneeded = (
            LeaseRow.expire_epoch < time.time() - after_seconds,
            ~exists().where(
                ThreadRow.namespace == LeaseRow.namespace,
                ThreadRow.thread_id == LeaseRow.thread_id,
            ),
        )
        async with self._db.write(wake=False) as conn:
            candidates = (
                await conn.execute(
                    select(LeaseRow.namespace, LeaseRow.thread_id).where(*unneeded).limit(limit)
                )
            ).all()
            # An acquire between its insert and its update must not lose the row: take each
            # thread's lock as acquire does, and leave the threads whose lock is held.
            locked = [
                (namespace, thread_id)
                for namespace, thread_id in candidates
                if await _try_lock_thread(conn, self._db.dialect, namespace, thread_id)
            ]
            if not locked:
                return 0
            dropped = (
                await conn.execute(
                    delete(LeaseRow)
                    .where(tuple_(LeaseRow.namespace, LeaseRow.thread_id).in_(locked))
                    .where(*unneeded)  # again, now that the threads are locked
                    .returning(LeaseRow.namespace, LeaseRow.fencing)
                )
            ).all()
            floors: dict[str, int] = {}
            for namespace, fencing in dropped:
                floors[namespace] = max(fencing, floors.get(namespace, 0))
            for namespace, fencing in floors.items():
                upsert = insert_for(self._db.dialect)(LeaseFloorRow).values(
                    namespace=namespace, fencing=fencing
                )
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["namespace"],
                        set_={
                            "fencing": case(
                                (
                                    upsert.excluded.fencing > LeaseFloorRow.fencing,
                                    upsert.excluded.fencing,
                                ),
                                else_=LeaseFloorRow.fencing,
                            )
                        },
                    )
                )
        return len(dropped)

    def _insert_missing(self, namespace: str, thread_id: str) -> Any:
        # A thread's first lease row, or the first since the sweeper dropped its row: its
        # numbers continue from the greatest the sweeper dropped in the namespace.
        floor = (
            select(LeaseFloorRow.fencing)
            .where(LeaseFloorRow.namespace == namespace)
            .scalar_subquery()
        )
        return (
            insert_for(self._db.dialect)(LeaseRow)
            .values(
                namespace=namespace,
                thread_id=thread_id,
                lease_id=None,
                fencing=func.coalesce(floor, literal(0)),
                expire_epoch=0,
            )
            .on_conflict_do_nothing()
        )


def _row(namespace: str, thread_id: str) -> Any:
    return update(LeaseRow).where(
        and_(LeaseRow.namespace == namespace, LeaseRow.thread_id == thread_id)
    )


async def _read(
    conn: AsyncConnection, namespace: str, thread_id: str, *, for_update: bool = False
) -> _Held:
    query = select(LeaseRow.lease_id, LeaseRow.fencing, LeaseRow.expire_epoch).where(
        LeaseRow.namespace == namespace, LeaseRow.thread_id == thread_id
    )
    if for_update:
        query = query.with_for_update()  # SQLite ignores it: BEGIN IMMEDIATE serializes
    row = (await conn.execute(query)).first()
    if row is None:
        return _Held(None, None, None)
    return _Held(row.lease_id, row.fencing, row.expire_epoch)


async def _lock_thread(
    conn: AsyncConnection, dialect: str, namespace: str, thread_id: str, *, exclusive: bool
) -> None:
    if dialect != "postgresql":
        return  # SQLite's BEGIN IMMEDIATE serializes the writes
    statement = _THREAD_LOCK.format(mode="" if exclusive else "_shared")
    await conn.execute(text(statement), {"namespace": namespace, "thread_id": thread_id})


async def _try_lock_thread(
    conn: AsyncConnection, dialect: str, namespace: str, thread_id: str
) -> bool:
    """``_lock_thread`` exclusively without waiting: whether the lock was taken."""
    if dialect != "postgresql":
        return True
    parameters = {"namespace": namespace, "thread_id": thread_id}
    return bool(await conn.scalar(text(_TRY_THREAD_LOCK), parameters))
