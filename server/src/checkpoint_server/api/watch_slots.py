"""A bound on the WatchEvents streams open at once, per namespace and per server.

An idle watcher costs little (a coroutine, an HTTP/2 stream, one read of the event log every
poll), but every watcher of a namespace re-reads the log after each commit there, so one
tenant's watchers multiply the cost of its own commits and, unbounded, those of the server.
A stream over a bound is refused before it reads anything; its slot is held until the stream
ends, however it ends (the client cancels, the server drains, an error).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from checkpoint_server.errors import ResourceExhausted


class WatchSlots:
    """Counts open watch streams against ``per_namespace`` and ``total``."""

    def __init__(self, per_namespace: int, total: int) -> None:
        """Bounds the streams of each namespace by ``per_namespace``, and all by ``total``."""
        self.per_namespace = per_namespace
        self.total = total
        self.open = 0
        self._by_namespace: dict[str, int] = {}

    @contextmanager
    def hold(self, namespace: str) -> Iterator[None]:
        """Holds a slot of ``namespace`` for the duration of the ``with`` block.

        Raises:
            ResourceExhausted: The namespace or the server has no slot free.

        """
        held = self._by_namespace.get(namespace, 0)
        if held >= self.per_namespace:
            raise ResourceExhausted(
                f"namespace {namespace!r} has its limit of {self.per_namespace} open "
                "WatchEvents streams (--max-watchers-per-namespace); close one or retry later"
            )
        if self.open >= self.total:
            raise ResourceExhausted(
                f"the server has its limit of {self.total} open WatchEvents streams "
                "(--max-watchers); retry later or on another server"
            )
        # Every call runs on the event loop's thread, so no lock is needed.
        self._by_namespace[namespace] = held + 1
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
            left = self._by_namespace[namespace] - 1
            if left:
                self._by_namespace[namespace] = left
            else:
                del self._by_namespace[namespace]  # an idle namespace costs no entry
