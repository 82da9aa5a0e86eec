"""What ``checkpoint-threads`` prints: the documents of ``--json`` and the tables made of them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from langgraph.checkpoint.grpc._threads import CheckpointSummary, Event, Thread

Document = dict[str, Any]
_METADATA_WIDTH = 40


# --- documents: what --json prints, and what the human output is formatted from ----------


def thread_document(thread: Thread) -> Document:
    """A thread; its counts and sizes only when it was read in the full view."""
    document: Document = {
        "thread_id": thread.thread_id,
        "status": thread.status,
        "created_at": thread.created_at,
        "updated_at": thread.updated_at,
        "latest_checkpoint_id": thread.latest_checkpoint_id,
        "metadata": thread.metadata,
        "ttl": None,
        "expires_at": thread.expires_at,
    }
    if thread.ttl is not None:
        document["ttl"] = {
            "seconds": thread.ttl.total_seconds(),
            "strategy": thread.ttl_strategy or "unknown",
        }
    if thread.checkpoint_count is not None:
        document["checkpoint_count"] = thread.checkpoint_count
        document["values_bytes"] = thread.values_bytes
        document["writes_bytes"] = thread.writes_bytes
    return document


def checkpoint_document(checkpoint: CheckpointSummary) -> Document:
    """A checkpoint of a history, with the step and source of its metadata up front."""
    return {
        "checkpoint_id": checkpoint.checkpoint_id,
        "parent_checkpoint_id": checkpoint.parent_checkpoint_id,
        "checkpoint_ns": checkpoint.checkpoint_ns,
        "step": checkpoint.metadata.get("step"),
        "source": checkpoint.metadata.get("source"),
        "created_at": checkpoint.created_at,
        "pending": list(checkpoint.pending_channels),
        "metadata": checkpoint.metadata,
    }


def event_document(event: Event) -> Document:
    """An event of ``watch``."""
    return {
        "kind": event.kind,
        "thread_id": event.thread_id,
        "checkpoint_ns": event.checkpoint_ns,
        "checkpoint_id": event.checkpoint_id,
        "source_thread_id": event.source_thread_id,
        "time": event.time,
        "cursor": event.cursor,
    }


def print_json(document: Any) -> None:
    """Prints ``document`` as indented JSON, times in RFC 3339."""
    print(json.dumps(document, indent=2, ensure_ascii=False, default=json_default))


def json_default(value: object) -> str:
    """Times as RFC 3339 in UTC, ``...Z``."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- human output ------------------------------------------------------------------------


def thread_table(threads: Sequence[Document]) -> str:
    """Threads, one a row, with their metadata cut short."""
    rows = [
        [
            t["thread_id"],
            t["status"],
            _when(t["updated_at"]),
            _when(t["created_at"]),
            _truncate(_compact(t["metadata"]), _METADATA_WIDTH),
        ]
        for t in threads
    ]
    return _table(["THREAD_ID", "STATUS", "UPDATED", "CREATED", "METADATA"], rows)


def thread_fields(thread: Document) -> str:
    """One thread, one ``field: value`` a line, its metadata indented below."""
    ttl = thread["ttl"]
    fields = [
        ("thread_id", thread["thread_id"]),
        ("status", thread["status"]),
        ("created", _when(thread["created_at"])),
        ("updated", _when(thread["updated_at"])),
        ("latest_checkpoint_id", thread["latest_checkpoint_id"] or "-"),
        ("checkpoint_count", str(thread["checkpoint_count"])),
        ("values_bytes", _size(thread["values_bytes"])),
        ("writes_bytes", _size(thread["writes_bytes"])),
        ("ttl", f"{_duration(ttl['seconds'])} ({ttl['strategy']})" if ttl else "server default"),
        ("expires", _when(thread["expires_at"]) if thread["expires_at"] else "never"),
        ("metadata", json.dumps(thread["metadata"], indent=2, ensure_ascii=False)),
    ]
    width = max(len(key) for key, _ in fields) + 1
    return "\n".join(
        f"{key + ':':<{width}} {value}".replace("\n", "\n" + " " * (width + 1))
        for key, value in fields
    )


def checkpoint_table(checkpoints: Sequence[Document]) -> str:
    """Checkpoints, one a row: IDs, step, source, time and the channels of pending writes."""
    rows = [
        [
            c["checkpoint_id"],
            c["parent_checkpoint_id"] or "-",
            _cell(c["step"]),
            _cell(c["source"]),
            _when(c["created_at"]),
            ",".join(c["pending"]) or "-",
        ]
        for c in checkpoints
    ]
    return _table(["CHECKPOINT_ID", "PARENT", "STEP", "SOURCE", "CREATED", "PENDING"], rows)


def event_line(event: Document) -> str:
    """An event on one line, its cursor last."""
    return (
        f"{_when(event['time'])}  {event['kind']:<16}  {event['thread_id']}  "
        f"{_cell(event['checkpoint_id'])}  {event['cursor']}"
    )


def plural(count: int, noun: str) -> str:
    """``1 thread``, ``2 threads``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def namespace_name(namespace: str) -> str:
    """How messages name a namespace."""
    return f"namespace {namespace!r}" if namespace else "the default namespace"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, headers first, no trailing spaces."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else _compact(value)


def _size(count: int) -> str:
    amount = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            break
        amount /= 1024
    human = f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"
    return f"{human} ({count:,} bytes)"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts) or f"{seconds}s"
