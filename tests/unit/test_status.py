"""Which writes set a thread's status (the rules that combine them are tested in SQL, in
tests/test_threads.py, on both databases)."""

from __future__ import annotations

from checkpoint_server.storage import status


def test_writes_set_a_status_only_in_the_root_graph() -> None:
    assert status.of_writes("", ["__interrupt__"]) == status.INTERRUPTED
    assert status.of_writes("", ["__interrupt__", "__error__"]) == status.ERROR
    assert status.of_writes("", ["messages"]) is None
    assert status.of_writes("child:1", ["__error__"]) is None
