"""How the server groups a namespace's writes: who runs at once, who waits, who learns what.

The store here records each group it is given and holds it until the test lets it finish,
so every test knows which writes wait. tests/test_group_commit.py runs the same path
against a real server on both databases.
"""

from __future__ import annotations

import asyncio

import pytest

from checkpoint_server.storage.group_commit import GroupCommit, Outcome

WAIT = 5.0  # seconds before a test gives up on something that should happen at once


class Store:
    """Stores groups of strings; a record named ``fail*`` fails.

    Holds each group until ``release()`` lets every group through, or ``release_one()`` one.
    """

    def __init__(self) -> None:
        self.groups: list[tuple[str, list[str]]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.started = asyncio.Event()
        self.raises: BaseException | None = None
        self._open = False
        self._tokens = 0
        self._changed = asyncio.Event()

    def release(self) -> None:
        self._open = True
        self._changed.set()

    def release_one(self) -> None:
        self._tokens += 1
        self._changed.set()

    async def __call__(self, namespace: str, records: list[str]) -> list[Outcome]:
        self.groups.append((namespace, records))
        self.tasks.append(asyncio.current_task())
        self.started.set()
        while not (self._open or self._tokens > 0):
            self._changed.clear()
            await self._changed.wait()
        if not self._open:
            self._tokens -= 1
        if self.raises is not None:
            raise self.raises
        return [(ValueError(r) if r.startswith("fail") else None, False) for r in records]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_write_runs_at_once_in_its_callers_task() -> None:
    store = Store()
    store.release()
    groups = GroupCommit(store, max_items=64)
    assert await groups.store("ns", ["a"]) == [(None, False)]
    assert store.groups == [("ns", ["a"])]
    assert store.tasks == [asyncio.current_task()]


async def test_writes_arriving_while_one_runs_go_together_next() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=64)
    first = asyncio.create_task(groups.store("ns", ["a"]))
    await asyncio.wait_for(store.started.wait(), WAIT)
    others = [asyncio.create_task(groups.store("ns", [r])) for r in ("b", "c", "fail-d")]
    batch = asyncio.create_task(groups.store("ns", ["e", "f"]))
    await _settle()
    assert store.groups == [("ns", ["a"])]  # the others wait for the running transaction
    store.release()
    assert await asyncio.wait_for(first, WAIT) == [(None, False)]
    results = await asyncio.wait_for(asyncio.gather(*others, batch), WAIT)
    assert store.groups == [("ns", ["a"]), ("ns", ["b", "c", "fail-d", "e", "f"])]
    assert [outcome[0] for outcome in results[0] + results[1]] == [None, None]
    [(error, _)] = results[2]
    assert isinstance(error, ValueError)
    assert str(error) == "fail-d"
    assert results[3] == [(None, False), (None, False)]
    assert groups._waiting == {}


async def test_namespaces_neither_wait_for_each_other_nor_share_a_transaction() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=64)
    a = asyncio.create_task(groups.store("one", ["a"]))
    b = asyncio.create_task(groups.store("two", ["b"]))
    await _settle()
    assert store.groups == [("one", ["a"]), ("two", ["b"])]  # both running at once
    store.release()
    await asyncio.wait_for(asyncio.gather(a, b), WAIT)


async def test_a_group_holds_at_most_max_items_and_the_rest_go_next() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=2)
    first = asyncio.create_task(groups.store("ns", ["a", "b", "c"]))
    await asyncio.wait_for(store.started.wait(), WAIT)
    later = asyncio.create_task(groups.store("ns", ["d", "e"]))
    await _settle()
    store.release()
    assert len(await asyncio.wait_for(first, WAIT)) == 3
    assert len(await asyncio.wait_for(later, WAIT)) == 2
    assert store.groups == [("ns", ["a", "b"]), ("ns", ["c", "d"]), ("ns", ["e"])]


async def test_one_item_a_group_stores_each_write_in_turn() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=1)
    first = asyncio.create_task(groups.store("ns", ["a"]))
    await asyncio.wait_for(store.started.wait(), WAIT)
    others = [asyncio.create_task(groups.store("ns", [r])) for r in ("b", "c")]
    await _settle()
    store.release()
    await asyncio.wait_for(asyncio.gather(first, *others), WAIT)
    assert store.groups == [("ns", ["a"]), ("ns", ["b"]), ("ns", ["c"])]


async def test_a_caller_that_gives_up_while_waiting_has_nothing_stored() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=64)
    first = asyncio.create_task(groups.store("ns", ["a"]))
    await asyncio.wait_for(store.started.wait(), WAIT)
    gone = asyncio.create_task(groups.store("ns", ["b"]))
    kept = asyncio.create_task(groups.store("ns", ["c"]))
    await _settle()
    gone.cancel()
    await _settle()
    store.release()
    await asyncio.wait_for(asyncio.gather(first, kept), WAIT)
    assert store.groups == [("ns", ["a"]), ("ns", ["c"])]
    assert gone.cancelled()


async def test_a_lone_caller_cancelled_mid_write_hands_the_waiting_on() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=1)
    first = asyncio.create_task(groups.store("ns", ["a", "never"]))
    await asyncio.wait_for(store.started.wait(), WAIT)
    other = asyncio.create_task(groups.store("ns", ["b"]))
    await _settle()
    first.cancel()
    await _settle()
    store.release()
    assert await asyncio.wait_for(other, WAIT) == [(None, False)]
    # "never" was the cancelled caller's own second record: not stored after it gave up.
    assert store.groups == [("ns", ["a"]), ("ns", ["b"])]
    assert groups._waiting == {}


async def test_a_group_that_raises_fails_each_of_its_callers_and_the_next_group_runs() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=2)
    first = asyncio.create_task(groups.store("ns", ["a"]))
    await asyncio.wait_for(store.started.wait(), WAIT)
    waiting = [asyncio.create_task(groups.store("ns", [r])) for r in ("b", "c", "d")]
    await _settle()
    store.raises = RuntimeError("boom")
    store.release()
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(first, WAIT)
    results = await asyncio.wait_for(asyncio.gather(*waiting), WAIT)
    assert all(isinstance(r[0][0], RuntimeError) for r in results)
    assert store.groups == [("ns", ["a"]), ("ns", ["b", "c"]), ("ns", ["d"])]
    assert groups._waiting == {}


async def test_a_drain_cancelled_at_shutdown_leaves_nobody_waiting() -> None:
    store = Store()
    groups = GroupCommit(store, max_items=1)
    first = asyncio.create_task(groups.store("ns", ["a"]))
    await asyncio.wait_for(store.started.wait(), WAIT)
    waiting = [asyncio.create_task(groups.store("ns", [r])) for r in ("b", "c")]
    await _settle()
    # The first write ends; its caller hands "b" and "c" to a drain task, held in "b".
    store.release_one()
    await asyncio.wait_for(first, WAIT)
    await _settle()
    assert store.groups[-1] == ("ns", ["b"])
    for task in list(groups._drains):
        task.cancel()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert groups._waiting == {}
