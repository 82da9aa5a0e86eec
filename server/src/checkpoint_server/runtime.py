"""The server process's event loop and garbage collector, tuned for serving.

Measured on the graph workload (issue 6): Python's cyclic collector took up to 15 % of a busy
server's CPU, rescanning the tens of thousands of long-lived objects that imports and start-up
create (modules, SQLAlchemy's compiled statements, protobuf descriptors) every time young
objects pile up; uvloop's event loop costs less per callback than asyncio's.
"""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

_T = TypeVar("_T")

# Requests allocate thousands of short-lived objects; with the default threshold (700) the
# young generation is collected several times per request, though almost nothing in it is
# cyclic garbage (reference counting frees it).
_YOUNG_THRESHOLD = 50_000


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Runs ``main`` on uvloop."""
    return uvloop.run(main)


def settle_after_start() -> None:
    """Moves everything start-up created out of the collector's sight, then raises its bar.

    Call once the server serves: objects alive then live as long as the process, and scanning
    them again at every collection of the older generations is pure cost.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, older, oldest)


__all__ = ["run", "settle_after_start"]
