"""The sync API's batches: many threads' calls of one kind, sent together (see _batch.py)."""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

import grpc
from langgraph.checkpoint.grpc._batch import ALONE, MAX_IN_FLIGHT, BatchRules, Kind, Outcome
from langgraph.checkpoint.grpc._errors import GrpcSaverError

SyncCall = Callable[[str, Any], Any]


class _State(enum.Enum):
    """Where a thread's call that waits for a batch is."""

    WAITING = enum.auto()  # in the queue
    LEADING = enum.auto()  # handed the wire: its own thread sends the next batch
    TAKEN = enum.auto()  # in the batch that another thread sends
    DONE = enum.auto()  # its outcome is in


@dataclass(eq=False, slots=True)
class _Ticket:
    """A thread's call while it waits, and then what it came to."""

    method: str
    request: Message
    size: int
    state: _State = _State.WAITING
    outcome: Outcome = ALONE
    ready: threading.Event = field(default_factory=threading.Event)


class SyncBatcher(BatchRules):
    """Sends many threads' calls of one kind, batching what piles up; thread-safe.

    It has no thread of its own. A thread whose call finds the wire busy queues the call and
    sleeps. The thread that frees the wire hands it to the first thread in the queue, which
    takes what waits (up to the limits), sends it as one batch call, wakes each thread of the
    batch with its outcome and hands the wire on. So a caller waits only for the call ahead of
    its own, and the batch goes from a thread that would be waiting anyway.
    """

    def __init__(self, namespace: str, call: SyncCall, *, max_bytes: int, kind: Kind) -> None:
        """Sends through ``call(method, request)``, which raises ``GrpcSaverError``.

        A batch holds at most ``max_bytes`` of requests; a larger one goes on its own.
        """
        super().__init__(namespace, max_bytes=max_bytes, kind=kind)
        self._call = call
        self._lock = threading.Lock()  # guards the queue, the states and the count in flight
        self._waiting: deque[_Ticket] = deque()
        self._in_flight = 0

    def send(self, method: str, request: Message) -> Any:
        """Makes the call ``method`` (request), or has it made in a batch; returns its value.

        Raises:
            GrpcSaverError: The item failed, with the code its own call would have ended with.

        """
        with self._lock:
            free = self._in_flight < MAX_IN_FLIGHT and not self._waiting
            size = self._size_if_waiting(free, request)
            if size is None:
                self._in_flight += 1
            else:
                ticket = _Ticket(method, request, size)
                self._waiting.append(ticket)
        if size is not None:
            outcome = self._wait(ticket)
            if outcome.alone:
                # The batch could not carry it: its own call, with its retries, from its own
                # thread, beside the next batch (the async Batcher sends it first; both are rare).
                return self._kind.value(self._call(method, request))
            if outcome.error is not None:
                raise outcome.error
            return outcome.value
        try:
            return self._kind.value(self._call(method, request))
        finally:
            with self._lock:
                self._in_flight -= 1
                self._hand_on()

    def close(self) -> None:
        """Fails the calls that wait, with CANCELLED: the saver is closing their channel."""
        with self._lock:
            while self._waiting:
                closed = GrpcSaverError(grpc.StatusCode.CANCELLED, "the saver was closed")
                _finish(self._waiting.popleft(), Outcome(error=closed))

    def _hand_on(self) -> None:
        """With the lock held: gives a free wire to the first thread that waits."""
        if self._in_flight < MAX_IN_FLIGHT and self._waiting:
            leader = self._waiting.popleft()
            leader.state = _State.LEADING
            self._in_flight += 1
            leader.ready.set()

    def _wait(self, ticket: _Ticket) -> Outcome:
        """Sleeps until the call's outcome is in, sending the batch if handed the wire."""
        try:
            ticket.ready.wait()
        except BaseException:  # interrupted (Ctrl-C): nobody else may wait for this thread
            with self._lock:
                if ticket.state is _State.WAITING:
                    self._waiting.remove(ticket)
                elif ticket.state is _State.LEADING:
                    self._in_flight -= 1
                    self._hand_on()
                # TAKEN: the leader finishes it for nobody; DONE: finished already.
            raise
        if ticket.state is _State.LEADING:
            self._lead(ticket)
        return ticket.outcome

    def _lead(self, leader: _Ticket) -> None:
        """Sends ``leader`` and what waits behind it as one call; gives each its outcome."""
        with self._lock:
            batch = self._fill([leader], self._waiting)
            for ticket in batch:
                ticket.state = _State.TAKEN
        outcomes: list[Outcome] | None = None
        try:
            outcomes = self._outcomes_of(batch)
        except Exception as error:  # unforeseen: every caller learns it
            outcomes = [Outcome(error=error)] * len(batch)
        finally:
            if outcomes is None:  # this thread was interrupted amid the call
                cut = GrpcSaverError(grpc.StatusCode.CANCELLED, "the batch call was interrupted")
                outcomes = [Outcome(error=cut)] * len(batch)
            with self._lock:
                for ticket, outcome in zip(batch, outcomes, strict=True):
                    _finish(ticket, outcome)
                self._in_flight -= 1
                self._hand_on()

    def _outcomes_of(self, batch: list[_Ticket]) -> list[Outcome]:
        if len(batch) == 1:  # nothing else waited: it goes as its own call
            return [self._alone(batch[0])]
        if not self._batches:
            return [ALONE] * len(batch)
        request = self._request([ticket.request for ticket in batch])
        try:
            response = self._call(self._kind.method, request)
        except GrpcSaverError as error:
            return self._failed(error, len(batch))
        return self._outcomes(len(batch), response)

    def _alone(self, ticket: _Ticket) -> Outcome:
        try:
            return Outcome(self._kind.value(self._call(ticket.method, ticket.request)))
        except Exception as error:  # its own caller learns it, as from its own call
            return Outcome(error=error)


def _finish(ticket: _Ticket, outcome: Outcome) -> None:
    """With the lock held: gives a ticket its outcome and wakes its thread."""
    ticket.outcome = outcome
    ticket.state = _State.DONE
    ticket.ready.set()
