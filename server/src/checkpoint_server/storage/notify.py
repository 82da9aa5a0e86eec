"""Waking watchers when events are committed: in this process, and from other servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

CHANNEL = "lgcp_events"


class EventHub:
    """Wakes every waiter when new events may be readable.

    Waiters re-read the event log when woken, so a spurious wake costs one query and a missed
    one costs at most the waiter's timeout: no event is ever delivered through the hub itself,
    and it holds nothing per event.
    """

    def __init__(self) -> None:
        """An idle hub."""
        self._event = asyncio.Event()

    def poke(self) -> None:
        """Wakes everyone waiting now."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Returns when poked, or after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


async def listen(url: URL, hub: EventHub) -> None:
    """Pokes ``hub`` on each NOTIFY of the events trigger (PostgreSQL), until cancelled.

    The connection is reopened after a failure; meanwhile waiters fall back to their timeout.
    """
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                hub.poke()  # events committed while not listening
                async for _ in conn.notifies():
                    hub.poke()
        except psycopg.Error as error:
            logger.warning("listening for events failed (%s); retrying", type(error).__name__)
            await asyncio.sleep(1)
