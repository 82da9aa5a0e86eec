"""The status rules, in plain Python: every order of the same events ends in the same status."""

from __future__ import annotations

import itertools

from checkpoint_server.storage import status


def _apply(events: tuple[tuple[str, str, str | None], ...]) -> str:
    """Replays puts ("put", id, None) and writes ("writes", id, status) as the upsert does."""
    latest: str | None = None
    held: str | None = None
    kept = status.IDLE
    for kind, checkpoint_id, set_status in events:
        if kind == "put":
            latest = checkpoint_id if latest is None or latest < checkpoint_id else latest
        elif set_status is not None:
            if held is None or held < checkpoint_id:
                held, kept = checkpoint_id, set_status
            elif held == checkpoint_id:
                kept = status.merge(kept, set_status)
    return status.shown(kept, held, latest)


def test_writes_set_a_status_only_in_the_root_graph() -> None:
    assert status.of_writes("", ["__interrupt__"]) == status.INTERRUPTED
    assert status.of_writes("", ["__interrupt__", "__error__"]) == status.ERROR
    assert status.of_writes("", ["messages"]) is None
    assert status.of_writes("child:1", ["__error__"]) is None


def test_an_error_beats_an_interrupt_of_the_same_checkpoint() -> None:
    assert status.merge(status.ERROR, status.INTERRUPTED) == status.ERROR
    assert status.merge(status.INTERRUPTED, status.ERROR) == status.ERROR
    assert status.merge(status.INTERRUPTED, status.INTERRUPTED) == status.INTERRUPTED


def test_every_order_of_puts_and_writes_shows_the_same_status() -> None:
    events = (
        ("put", "1", None),
        ("put", "2", None),
        ("writes", "2", status.INTERRUPTED),
        ("writes", "1", status.ERROR),
    )
    shown = {_apply(order) for order in itertools.permutations(events)}
    assert shown == {status.INTERRUPTED}


def test_a_newer_checkpoint_without_status_writes_is_idle() -> None:
    events = (("writes", "1", status.ERROR), ("put", "1", None), ("put", "2", None))
    assert {_apply(order) for order in itertools.permutations(events)} == {status.IDLE}


def test_status_writes_shown_only_once_their_checkpoint_is_the_latest() -> None:
    assert _apply((("put", "1", None), ("writes", "2", status.INTERRUPTED))) == status.IDLE
