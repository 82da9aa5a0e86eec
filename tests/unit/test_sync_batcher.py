"""How the sync saver groups many threads' puts and writes: who sends, who waits, who learns what.

The transport here is a function that records the calls and answers as told; while it holds
the wire, each call stays on it until the test lets one return, so every test knows which
calls wait. tests/test_sync_batch.py runs the same path against a real server.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

from langgraph.checkpoint.grpc import GrpcSaverError
from langgraph.checkpoint.grpc._batch import MAX_ITEMS, WRITES
from langgraph.checkpoint.grpc._sync_batch import SyncBatcher

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
CANCELLED = grpc.StatusCode.CANCELLED
FAILED = grpc.StatusCode.FAILED_PRECONDITION
WAIT = 5.0  # seconds before a test gives up on something that should happen at once


class Transport:
    """Answers calls; ``codes`` decides an item's code by thread ID, once per ID.

    While ``held``, a call stays on the wire until ``release()`` lets it return; each call
    takes ``delay`` seconds besides.
    """

    def __init__(
        self,
        *,
        batches: bool = True,
        codes: dict[str, grpc.StatusCode] | None = None,
        held: bool = True,
        batch_raises: BaseException | None = None,
        delay: float = 0.0,
    ) -> None:
        # Method, thread IDs, and the name of the thread that made the call.
        self.calls: list[tuple[str, list[str], str]] = []
        self.batches = batches
        self.codes = dict(codes or {})
        self.batch_raises = batch_raises
        self.delay = delay
        self.on_wire = 0
        self.most_on_wire = 0
        self._held = held
        self._turns = 0
        self._changed = threading.Condition()

    def __call__(self, method: str, request: Any) -> Any:
        if method == "BatchWrite":
            threads = [getattr(i, i.WhichOneof("item")).thread_id for i in request.items]
        else:
            threads = [request.thread_id]
        with self._changed:
            self.calls.append((method, threads, threading.current_thread().name))
            self.on_wire += 1
            self.most_on_wire = max(self.most_on_wire, self.on_wire)
            self._changed.notify_all()
            assert self._changed.wait_for(lambda: not self._held or self._turns, WAIT)
            if self._held:
                self._turns -= 1
            codes = [self.codes.pop(thread, grpc.StatusCode.OK) for thread in threads]
        try:
            time.sleep(self.delay)
            return self._answer(method, threads, codes)
        finally:
            with self._changed:
                self.on_wire -= 1

    def _answer(self, method: str, threads: list[str], codes: list[grpc.StatusCode]) -> Any:
        if method != "BatchWrite":
            if codes[0] != grpc.StatusCode.OK:
                raise GrpcSaverError(codes[0], f"{threads[0]} failed alone")
            return None
        if self.batch_raises is not None:
            raise self.batch_raises
        if not self.batches:
            raise GrpcSaverError(grpc.StatusCode.UNIMPLEMENTED, "unknown method")
        results = [
            api.BatchWriteResult(code=code.value[0], message=f"{thread} failed")
            for thread, code in zip(threads, codes, strict=True)
        ]
        return api.BatchWriteResponse(results=results)

    def release(self, calls: int = 1) -> None:
        """Lets ``calls`` calls on the wire return."""
        with self._changed:
            self._turns += calls
            self._changed.notify_all()

    def hold(self) -> None:
        """Holds calls on the wire again, until released."""
        with self._changed:
            self._held = True
            self._turns = 0

    def let_go(self) -> None:
        """Holds no call from now on."""
        with self._changed:
            self._held = False
            self._changed.notify_all()

    def wait_for_calls(self, count: int) -> None:
        """Returns once ``count`` calls have reached the wire."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.calls) >= count, WAIT), self.calls

    def sent(self) -> list[tuple[str, list[str]]]:
        return [(method, threads) for method, threads, _ in self.calls]


class Caller(threading.Thread):
    """A thread that makes one call through the batcher and keeps what it came to."""

    def __init__(self, batcher: SyncBatcher, thread_id: str) -> None:
        super().__init__(name=thread_id, daemon=True)
        self.batcher = batcher
        self.thread_id = thread_id
        self.outcome: Any = "not yet"

    def run(self) -> None:
        try:
            self.outcome = self.batcher.send("PutCheckpoint", put(self.thread_id))
        except BaseException as error:  # the test looks at it
            self.outcome = error

    def result(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), f"{self.thread_id} still waits"
        return self.outcome


def put(thread_id: str) -> api.PutCheckpointRequest:
    return api.PutCheckpointRequest(thread_id=thread_id, checkpoint_id="c1")


def batcher_on(transport: Transport, max_bytes: int = 1 << 20) -> SyncBatcher:
    return SyncBatcher("ns", transport, max_bytes=max_bytes, kind=WRITES)


def waiting(batcher: SyncBatcher) -> int:
    return len(batcher._waiting)


def until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def on_the_wire(batcher: SyncBatcher, transport: Transport, thread_id: str) -> Caller:
    """A call that went out at once and stays on the wire until released."""
    caller = Caller(batcher, thread_id)
    count = len(transport.calls)
    caller.start()
    transport.wait_for_calls(count + 1)
    return caller


def queue(batcher: SyncBatcher, thread_ids: list[str]) -> list[Caller]:
    """Calls made one after another while the wire is busy: they wait, in this order."""
    callers = []
    for thread_id in thread_ids:
        before = waiting(batcher)
        caller = Caller(batcher, thread_id)
        caller.start()
        until(lambda before=before: waiting(batcher) == before + 1)
        callers.append(caller)
    return callers


def names(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}{n}" for n in range(start, start + count)]


def test_calls_go_at_once_until_the_wire_is_busy_then_together() -> None:
    transport = Transport()
    batcher = batcher_on(transport)
    first = on_the_wire(batcher, transport, "t0")
    later = queue(batcher, names("t", 9, start=1))
    assert transport.sent() == [("PutCheckpoint", ["t0"])]  # the others wait
    transport.let_go()
    assert [c.result() for c in [first, *later]] == [None] * 10
    assert transport.sent() == [("PutCheckpoint", ["t0"]), ("BatchWrite", names("t", 9, start=1))]
    assert transport.most_on_wire == 1


def test_the_first_waiting_thread_sends_the_next_batch_and_hands_the_wire_on() -> None:
    transport = Transport()
    batcher = batcher_on(transport)
    first = on_the_wire(batcher, transport, "a0")
    second = queue(batcher, names("b", 3))
    transport.release()  # a0 returns: b0 sends b0..b2
    transport.wait_for_calls(2)
    third = queue(batcher, names("c", 3))
    transport.release()  # the batch returns: c0 sends c0..c2
    transport.wait_for_calls(3)
    transport.release()
    assert [c.result() for c in [first, *second, *third]] == [None] * 7
    assert transport.calls == [
        ("PutCheckpoint", ["a0"], "a0"),
        ("BatchWrite", names("b", 3), "b0"),
        ("BatchWrite", names("c", 3), "c0"),
    ]
    assert transport.most_on_wire == 1
    assert waiting(batcher) == 0


def test_each_caller_learns_its_own_items_outcome() -> None:
    codes = {"t5": grpc.StatusCode.FAILED_PRECONDITION, "t6": UNAVAILABLE}
    transport = Transport(codes=codes)
    batcher = batcher_on(transport)
    callers = [on_the_wire(batcher, transport, "t0"), *queue(batcher, names("t", 7, start=1))]
    transport.let_go()
    outcomes = [c.result() for c in callers]
    failed = {n: o for n, o in enumerate(outcomes) if o is not None}
    assert list(failed) == [5]
    assert isinstance(failed[5], GrpcSaverError)
    assert failed[5].code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed[5].details == "t5 failed"
    # The unavailable item was sent again on its own, by its own thread, and stored.
    assert transport.calls[-1] == ("PutCheckpoint", ["t6"], "t6")


def test_a_server_without_batches_gets_unary_calls() -> None:
    transport = Transport(batches=False)
    batcher = batcher_on(transport)
    callers = [on_the_wire(batcher, transport, "t0"), *queue(batcher, names("t", 5, start=1))]
    transport.let_go()
    assert [c.result() for c in callers] == [None] * 6
    assert transport.sent()[1] == ("BatchWrite", names("t", 5, start=1))
    unary = sorted(t for m, ts in transport.sent() if m == "PutCheckpoint" for t in ts)
    assert unary == names("t", 6)
    # From then on every call goes at once, on its own, however many are on the wire.
    transport.hold()
    transport.most_on_wire = 0
    before = len(transport.calls)
    callers = [Caller(batcher, thread_id) for thread_id in names("u", 6)]
    for caller in callers:
        caller.start()
    transport.wait_for_calls(before + 6)
    transport.let_go()
    assert [c.result() for c in callers] == [None] * 6
    assert {m for m, _ in transport.sent()[before:]} == {"PutCheckpoint"}
    assert transport.most_on_wire == 6


def test_an_unreachable_server_fails_every_item_of_the_call() -> None:
    codes = {thread: UNAVAILABLE for thread in names("t", 5)}
    transport = Transport(codes=codes, batch_raises=GrpcSaverError(UNAVAILABLE, "down"))
    batcher = batcher_on(transport)
    callers = [on_the_wire(batcher, transport, "t0"), *queue(batcher, names("t", 4, start=1))]
    transport.let_go()
    outcomes = [c.result() for c in callers]
    assert all(isinstance(o, GrpcSaverError) and o.code == UNAVAILABLE for o in outcomes)
    # Each waiter raises an error of its own, not one object shared between threads.
    assert len({id(o) for o in outcomes[1:]}) == 4
    assert [m for m, _ in transport.sent()] == ["PutCheckpoint", "BatchWrite"]  # none again


def test_a_batch_holds_at_most_max_items() -> None:
    transport = Transport()
    batcher = batcher_on(transport)
    callers = [on_the_wire(batcher, transport, "t0"), *queue(batcher, names("t", MAX_ITEMS + 3))]
    transport.let_go()
    assert all(c.result() is None for c in callers)
    assert [len(threads) for _, threads in transport.sent()] == [1, MAX_ITEMS, 3]


def test_a_batch_holds_at_most_max_bytes_and_a_larger_call_goes_at_once() -> None:
    transport = Transport()
    size = put("t0").ByteSize()
    batcher = batcher_on(transport, max_bytes=size * 5 // 2)
    callers = [on_the_wire(batcher, transport, "t0"), *queue(batcher, names("t", 5, start=1))]
    large = Caller(batcher, "large-" + "x" * size * 3)
    large.start()
    transport.wait_for_calls(2)  # on the wire beside t0, not queued
    assert waiting(batcher) == 5
    transport.let_go()
    assert all(c.result() is None for c in [*callers, large])
    assert [threads for _, threads in transport.sent()[2:]] == [["t1", "t2"], ["t3", "t4"], ["t5"]]


def test_a_leader_whose_call_raises_still_answers_every_waiter() -> None:
    transport = Transport(batch_raises=RuntimeError("broken response"))
    batcher = batcher_on(transport)
    callers = [on_the_wire(batcher, transport, "t0"), *queue(batcher, names("t", 4, start=1))]
    transport.let_go()
    outcomes = [c.result() for c in callers]
    assert outcomes[0] is None
    assert all(isinstance(o, RuntimeError) for o in outcomes[1:])
    # The wire was handed on: the next call goes out at once and comes back.
    assert batcher.send("PutCheckpoint", put("after")) is None
    assert transport.sent()[-1] == ("PutCheckpoint", ["after"])


def test_an_interrupted_leader_fails_its_batch_and_frees_the_wire() -> None:
    transport = Transport(batch_raises=KeyboardInterrupt())
    batcher = batcher_on(transport)
    callers = [on_the_wire(batcher, transport, "t0"), *queue(batcher, names("t", 4, start=1))]
    transport.let_go()
    outcomes = [c.result() for c in callers]
    assert isinstance(outcomes[1], KeyboardInterrupt)  # the leader's own thread
    assert all(isinstance(o, GrpcSaverError) and o.code == CANCELLED for o in outcomes[2:])
    transport.batch_raises = None
    transport.hold()
    again = [on_the_wire(batcher, transport, "u0"), *queue(batcher, names("u", 2, start=1))]
    transport.let_go()
    assert [c.result() for c in again] == [None] * 3
    assert transport.sent()[-1] == ("BatchWrite", ["u1", "u2"])


@pytest.fixture
def interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, even where a shell started the tests with it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("interruptible")
def test_an_interrupted_waiter_leaves_the_queue() -> None:
    transport = Transport()
    batcher = batcher_on(transport)
    first = on_the_wire(batcher, transport, "t0")
    before = queue(batcher, ["t1"])
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "pytest runs tests in the main thread"

    def interrupt_main() -> None:
        until(lambda: waiting(batcher) == 2)
        time.sleep(0.05)  # the main thread sleeps in its wait by now
        after.extend(queue(batcher, ["t3"]))
        signal.pthread_kill(main, signal.SIGINT)

    after: list[Caller] = []
    helper = threading.Thread(target=interrupt_main)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        batcher.send("PutCheckpoint", put("gone"))
    helper.join(WAIT)
    assert waiting(batcher) == 2  # t1 and t3
    transport.let_go()
    assert [c.result() for c in [first, *before, *after]] == [None] * 3
    assert transport.sent() == [("PutCheckpoint", ["t0"]), ("BatchWrite", ["t1", "t3"])]


def test_closing_fails_the_calls_that_wait_at_once() -> None:
    transport = Transport()
    batcher = batcher_on(transport)
    first = on_the_wire(batcher, transport, "t0")
    later = queue(batcher, names("t", 3, start=1))
    batcher.close()
    closed = [c.result() for c in later]  # while t0 is still on the wire
    assert all(isinstance(o, GrpcSaverError) and o.code == CANCELLED for o in closed)
    transport.let_go()
    assert first.result() is None
    assert transport.sent() == [("PutCheckpoint", ["t0"])]


def test_many_threads_each_learn_their_own_outcome() -> None:
    """Threads that call over and over, some items refused: nobody hangs, nobody is mixed up."""
    rng = random.Random(3)  # noqa: S311 - test data
    thread_ids = [f"w{w}-{n}" for w in range(16) for n in range(40)]
    codes = {t: rng.choice([FAILED, UNAVAILABLE]) for t in thread_ids if rng.random() < 0.15}
    transport = Transport(codes=codes, held=False, delay=0.002)
    batcher = batcher_on(transport)
    failures: dict[str, GrpcSaverError] = {}

    def work(w: int) -> None:
        for n in range(40):
            thread_id = f"w{w}-{n}"
            try:
                batcher.send("PutCheckpoint", put(thread_id))
            except GrpcSaverError as error:
                failures[thread_id] = error

    workers = [threading.Thread(target=work, args=(w,)) for w in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert not worker.is_alive()
    assert any(m == "BatchWrite" for m, _ in transport.sent())
    # A refused item fails with its own message; an unavailable one is stored unless it was
    # refused in a call of its own (this transport does not retry); all others are stored.
    assert {t for t, code in codes.items() if code == FAILED} <= set(failures)
    assert set(failures) <= set(codes)
    for thread_id, error in failures.items():
        assert error.code == codes[thread_id]
        assert error.details.startswith(f"{thread_id} failed")
    assert waiting(batcher) == 0
    assert batcher._in_flight == 0
