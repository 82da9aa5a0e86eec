"""The hub that wakes watchers: a commit wakes its own namespace's watchers, and none is missed."""

from __future__ import annotations

import asyncio

from checkpoint_server.storage.notify import EventHub


async def test_a_commit_wakes_only_its_namespace() -> None:
    hub = EventHub()
    a, b = hub.ticket("a"), hub.ticket("b")
    hub.poke("b")
    assert b.is_set()
    assert not a.is_set()
    hub.poke("a")
    assert a.is_set()


async def test_a_commit_between_reading_and_waiting_is_not_missed() -> None:
    hub = EventHub()
    ticket = hub.ticket("a")  # taken before the watcher reads the log
    hub.poke("a")  # a commit lands after the read, before the wait
    await asyncio.wait_for(hub.wait(ticket, 30), 1)  # at once, not after 30 s
    assert ticket.is_set()
    assert not hub.ticket("a").is_set()  # the next read waits for the next commit


async def test_a_poke_without_namespace_wakes_everyone() -> None:
    hub = EventHub()
    tickets = [hub.ticket(name) for name in ("a", "b", "c")]
    hub.poke()
    assert all(t.is_set() for t in tickets)
