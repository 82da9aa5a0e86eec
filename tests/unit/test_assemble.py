"""Row assembly: the rows of one read statement become checkpoints with their values and writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from checkpoint_server.storage.queries import assemble


class Row(NamedTuple):
    """A row of the read statement: the columns named as queries._ROW_COLUMNS names them."""

    kind: int
    thread_key: Any = None
    checkpoint_ns: Any = None
    checkpoint_id: Any = None
    parent_checkpoint_id: Any = None
    thread_id: Any = None
    channel: Any = None
    version: Any = None
    task_path: Any = None
    task_id: Any = None
    idx: Any = None
    type: Any = None
    data: Any = None
    metadata_json: Any = None
    versions_json: Any = None
    create_time: Any = None


def _checkpoint(checkpoint_id: str, versions: str) -> Row:
    return Row(
        0,
        thread_key=7,
        checkpoint_ns="",
        checkpoint_id=checkpoint_id,
        thread_id="t",
        type="msgpack",
        data=b"body",
        metadata_json="{}",
        versions_json=versions,
        create_time=datetime.now(UTC),
    )


def test_values_go_to_each_checkpoint_naming_their_version_and_writes_are_ordered() -> None:
    rows = [
        Row(2, 7, "", "b", task_path="~", task_id="z", idx=0, channel="c", type="j", data=b"2"),
        _checkpoint("a", '{"messages": "1"}'),
        Row(1, 7, "", channel="messages", version="2", type="j", data=b"v2"),
        _checkpoint("b", '{"messages": "2"}'),
        Row(1, 7, "", channel="messages", version="1", type="j", data=b"v1"),
        Row(2, 7, "", "b", task_path="~", task_id="a", idx=1, channel="c", type="j", data=b"1"),
    ]
    newest, oldest = assemble(rows)
    assert (newest.checkpoint_id, oldest.checkpoint_id) == ("b", "a")
    assert [v.data for v in newest.values] == [b"v2"]
    assert [v.data for v in oldest.values] == [b"v1"]
    assert [(w.task_id, w.idx) for w in newest.writes] == [("a", 1), ("z", 0)]
    assert oldest.writes == []
