"""Group commit: a namespace's writes that arrive while its transaction runs share the next one.

Per namespace, one write transaction runs at a time. A write that finds none running runs at
once, in its caller's task, so a lone caller waits for nothing. Writes that arrive meanwhile,
from any client, wait; when the running transaction ends, all of them (up to ``max_items``)
go in the next one, run by a task of its own. Each caller still hears back only once its
own write is committed, and with its own outcome: a group that fails is stored again item by
item (``CheckpointStore``), so a failing write fails nobody else.

Namespaces do not wait for each other, and never share a transaction: a tenant whose writes
keep failing (a lease it does not hold) makes only its own groups pay twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

_R = TypeVar("_R")
# What became of one record: its error (None when stored), and whether it was stored on its
# own after the group it came in failed.
Outcome = tuple[Exception | None, bool]
Store = Callable[[str, list[_R]], Awaitable[list[Outcome]]]


class GroupCommit(Generic[_R]):
    """Runs each namespace's writes one transaction at a time, grouping those that wait."""

    def __init__(self, store: Store[_R], max_items: int) -> None:
        """``store`` stores records of one namespace in one transaction where it can.

        ``max_items`` caps a group; 1 gives every record a transaction of its own, in turn.
        """
        self._store = store
        self._max_items = max_items
        self._waiting: dict[str, deque[tuple[_R, asyncio.Future[Outcome]]]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def store(self, namespace: str, records: Sequence[_R]) -> list[Outcome]:
        """Stores ``records``, with or after the namespace's others; each one's outcome."""
        waiting = self._waiting.get(namespace)
        if waiting is not None:
            # A caller that gives up (its call cancelled) cancels its futures: records not
            # yet taken into a group are then never stored.
            return list(await asyncio.gather(*self._enqueue(waiting, records)))
        waiting = self._waiting[namespace] = deque()
        # More than a group holds: the rest waits for the next one, as others' records do.
        later = self._enqueue(waiting, records[self._max_items :])
        try:
            outcomes = await self._store(namespace, list(records[: self._max_items]))
        except BaseException:
            for future in later:
                future.cancel()
            raise
        finally:
            self._next(namespace)
        return outcomes + list(await asyncio.gather(*later)) if later else outcomes

    @staticmethod
    def _enqueue(
        waiting: deque[tuple[_R, asyncio.Future[Outcome]]], records: Sequence[_R]
    ) -> list[asyncio.Future[Outcome]]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in records]
        waiting.extend(zip(records, futures, strict=True))
        return futures

    def _next(self, namespace: str) -> None:
        if self._waiting[namespace]:
            task = asyncio.create_task(self._drain(namespace))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        else:
            del self._waiting[namespace]

    async def _drain(self, namespace: str) -> None:
        waiting = self._waiting[namespace]
        group: list[tuple[_R, asyncio.Future[Outcome]]] = []
        try:
            while True:
                group = []
                while waiting and len(group) < self._max_items:
                    item = waiting.popleft()
                    if not item[1].done():
                        group.append(item)
                if not group:
                    return
                try:
                    outcomes = await self._store(namespace, [record for record, _ in group])
                except Exception as error:  # a bug: every caller of the group hears of it
                    outcomes = [(error, False)] * len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            # Cancelled (the server is stopping): nobody is left waiting for ever.
            for _, future in (*group, *waiting):
                future.cancel()
            del self._waiting[namespace]
