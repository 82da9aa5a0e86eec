"""Waking watchers when events are committed: in this process, and from other servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

import psycopg
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

CHANNEL = "lgcp_events"


class EventHub:
    """Wakes the watchers of a namespace when new events may be readable there.

    Waiters re-read the event log when woken, so a spurious wake costs one query and a missed
    one costs at most the waiter's timeout: no event is ever delivered through the hub itself.
    It holds one flag per namespace that has watchers waiting, and a commit wakes only its own
    namespace's watchers.

    A watcher takes a ticket before it reads the log and waits on it after: a commit between
    the read and the wait has already set the ticket, so it is never missed.
    """

    def __init__(self) -> None:
        """An idle hub."""
        # Held only by the watchers waiting on them: a namespace nobody watches any more
        # leaves nothing behind.
        self._tickets: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    def ticket(self, namespace: str) -> asyncio.Event:
        """The flag the next commit in ``namespace`` sets."""
        ticket = self._tickets.get(namespace)
        if ticket is None:
            ticket = self._tickets[namespace] = asyncio.Event()
        return ticket

    def poke(self, namespace: str | None = None) -> None:
        """Wakes the watchers of ``namespace`` waiting now, or of every namespace if None."""
        if namespace is None:
            woken = list(self._tickets.values())
            self._tickets.clear()
        else:
            ticket = self._tickets.pop(namespace, None)
            woken = [] if ticket is None else [ticket]
        for ticket in woken:
            ticket.set()

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float) -> None:
        """Returns when ``ticket`` is set, or after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), seconds)


async def listen(url: URL, hub: EventHub) -> None:
    """Pokes ``hub`` on each NOTIFY of the events trigger (PostgreSQL), until cancelled.

    A notification's payload names the namespace whose events were committed; an empty one
    (from a server older than migration 0004) wakes every namespace.
    The connection is reopened after a failure; meanwhile waiters fall back to their timeout.
    """
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                hub.poke()  # events committed while not listening
                async for notification in conn.notifies():
                    hub.poke(notification.payload or None)
        except psycopg.Error as error:
            logger.warning("listening for events failed (%s); retrying", type(error).__name__)
            await asyncio.sleep(1)
