"""A thread's status, derived so that it is right whatever order puts and writes arrive in.

LangGraph does not make ``put_writes`` wait for the put of an earlier checkpoint, so the
``__interrupt__`` write of checkpoint N can be stored before N, or before N's parent. The
catalog therefore keeps two registers per thread that only ever grow, each by a comparison of
checkpoint IDs (which grow within a thread's root graph):

- ``latest_checkpoint_id``: the newest root checkpoint stored;
- ``status_checkpoint_id``: the newest root checkpoint that has status-setting writes, whose
  status is kept in ``status`` (an error beats an interrupt of the same checkpoint).

The status shown is that status when it belongs to the latest checkpoint, and idle otherwise
(``queries.shown_status``). Growing registers commute: every order of the same puts and writes
ends in the same state. The registers are kept in SQL, written twice: PostgreSQL's
``lgcp_touch_thread`` (migration 0004) and ``sqlite_writes``. A change to the rules changes
both, with a new migration; tests/test_threads.py stores every order of a checkpoint, its
child and their status writes on both databases.
"""

from __future__ import annotations

from collections.abc import Iterable

IDLE = "idle"
# Shown while a worker holds the thread's lease (storage/leases.py), whatever the registers say.
BUSY = "busy"
INTERRUPTED = "interrupted"
ERROR = "error"

# LangGraph's channels for a task's failure and for interrupt().
ERROR_CHANNEL = "__error__"
INTERRUPT_CHANNEL = "__interrupt__"


def of_writes(checkpoint_ns: str, channels: Iterable[str]) -> str | None:
    """The status that writes set on their checkpoint, or None when they set none.

    Only the root graph's writes count: a subgraph's interrupt surfaces as the root's too.
    """
    if checkpoint_ns != "":
        return None
    written = set(channels)
    if ERROR_CHANNEL in written:
        return ERROR
    if INTERRUPT_CHANNEL in written:
        return INTERRUPTED
    return None
