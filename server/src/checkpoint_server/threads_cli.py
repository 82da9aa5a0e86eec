"""``checkpoint-server threads``: inspect and clean up the threads of a running server.

These subcommands are a gRPC client of the service, built on the generated stubs alone:

    checkpoint-server threads list [--status S] [--metadata KEY=JSON ...] [--all]
    checkpoint-server threads show THREAD_ID
    checkpoint-server threads history THREAD_ID [--checkpoint-ns NS]
    checkpoint-server threads prune THREAD_ID... [--strategy keep_latest|delete]
    checkpoint-server threads delete THREAD_ID... --yes
    checkpoint-server threads watch [THREAD_ID] [--after CURSOR] [--from-beginning]

Each prints a human-readable report, or one JSON document with ``--json``. Exit codes: 0 on
success, 1 on a gRPC error (``error: CODE: details`` on stderr), 2 on a usage error or a
refused deletion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lgcheckpoint.v1 import checkpoint_pb2 as checkpoint_pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as checkpoint_api
from lgcheckpoint.v1 import thread_pb2 as thread_pb
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from checkpoint_server import client_channel

_STATUS_NAMES: dict[thread_pb.ThreadStatus.ValueType, str] = {
    thread_pb.THREAD_STATUS_IDLE: "idle",
    thread_pb.THREAD_STATUS_BUSY: "busy",
    thread_pb.THREAD_STATUS_INTERRUPTED: "interrupted",
    thread_pb.THREAD_STATUS_ERROR: "error",
}
_STATUSES = {name: value for value, name in _STATUS_NAMES.items()}
_TTL_STRATEGIES: dict[thread_pb.TtlStrategy.ValueType, str] = {
    thread_pb.TTL_STRATEGY_DELETE: "delete",
    thread_pb.TTL_STRATEGY_KEEP_LATEST: "keep_latest",
}
_SORT_BY = {
    "updated_at": thread_api.THREAD_SORT_BY_UPDATE_TIME,
    "created_at": thread_api.THREAD_SORT_BY_CREATE_TIME,
    "thread_id": thread_api.THREAD_SORT_BY_THREAD_ID,
}
_PRUNE_STRATEGIES = {
    "keep_latest": checkpoint_pb.PRUNE_STRATEGY_KEEP_LATEST,
    "delete": checkpoint_pb.PRUNE_STRATEGY_DELETE,
}
_MAX_PAGE = 1000  # the largest page_size, and the most thread IDs one PruneThreads takes
_METADATA_WIDTH = 40

Document = dict[str, Any]


@dataclass(frozen=True)
class _Client:
    """The two services of one server, in one namespace, with one deadline per call."""

    checkpoints: CheckpointServiceStub
    threads: ThreadServiceStub
    namespace: str
    timeout: float


Command = Callable[[_Client, argparse.Namespace], int]


# --- arguments ---------------------------------------------------------------------------


def add_parser(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser], default_address: str
) -> None:
    """Registers ``threads`` and its subcommands on the ``checkpoint-server`` parser.

    Args:
        subcommands: The top-level subparsers of ``checkpoint-server``.
        default_address: The ``--address`` used when none is given.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=default_address,
        help="host:port, or grpcs://host:port for TLS, of the server (default: the local end "
        "of CHECKPOINT_SERVER_LISTEN, %(default)s)",
    )
    common.add_argument("--namespace", default="", help='tenant namespace (default "")')
    client_channel.add_arguments(common)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="deadline of each call in seconds (default %(default)s)",
    )

    threads = subcommands.add_parser(
        "threads", help="list, inspect, watch, prune or delete threads"
    )
    commands = threads.add_subparsers(dest="threads_command", required=True)

    listing = commands.add_parser("list", parents=[common], help="search the threads")
    listing.add_argument("--status", choices=list(_STATUSES), help="only threads in this status")
    listing.add_argument(
        "--metadata",
        action="append",
        type=_metadata_filter,
        default=[],
        metavar="KEY=JSON_VALUE",
        help="only threads whose metadata KEY equals JSON_VALUE (repeatable; "
        "strings need JSON quotes: user='\"ada\"')",
    )
    listing.add_argument(
        "--sort-by", choices=list(_SORT_BY), default="updated_at", help="default %(default)s"
    )
    listing.add_argument("--asc", action="store_true", help="oldest/smallest first")
    listing.add_argument(
        "--limit", type=_page_size, default=20, help="threads per page (default %(default)s)"
    )
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.set_defaults(run=list_threads)

    show = commands.add_parser("show", parents=[common], help="one thread, with its sizes")
    show.add_argument("thread_id")
    show.set_defaults(run=show_thread)

    history = commands.add_parser(
        "history", parents=[common], help="a thread's checkpoints, newest first"
    )
    history.add_argument("thread_id")
    history.add_argument(
        "--checkpoint-ns", default="", help="sub-graph namespace (default: the root graph)"
    )
    history.add_argument(
        "--limit", type=_page_size, default=20, help="at most this many (default %(default)s)"
    )
    history.set_defaults(run=thread_history)

    prune = commands.add_parser(
        "prune", parents=[common], help="keep only the latest checkpoints, or delete them all"
    )
    prune.add_argument("thread_ids", nargs="+", metavar="THREAD_ID")
    prune.add_argument(
        "--strategy", choices=list(_PRUNE_STRATEGIES), default="keep_latest", help="%(default)s"
    )
    prune.set_defaults(run=prune_threads)

    watch = commands.add_parser(
        "watch", parents=[common], help="print events as they are committed, until Ctrl-C"
    )
    watch.add_argument("thread_id", nargs="?", help="only this thread (default: every thread)")
    watch.add_argument("--after", default="", help="resume after this event cursor")
    watch.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest retained event"
    )
    watch.set_defaults(run=watch_events)

    delete = commands.add_parser(
        "delete", parents=[common], help="delete threads with everything stored for them"
    )
    delete.add_argument("thread_ids", nargs="+", metavar="THREAD_ID")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(run=delete_threads)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def _page_size(value: str) -> int:
    number = int(value)
    if not 1 <= number <= _MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {_MAX_PAGE}")
    return number


def _metadata_filter(value: str) -> tuple[str, Any]:
    key, equals, raw = value.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=JSON_VALUE")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a JSON value (a string needs quotes: {key}='\"{raw}\"')"
        ) from None


# --- running -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Runs a parsed ``threads`` subcommand against the server; returns the exit code."""
    options = [("grpc.max_receive_message_length", -1)]  # the server bounds its responses
    try:
        with client_channel.open_channel(args, options) as channel:
            client = _Client(
                CheckpointServiceStub(channel),
                ThreadServiceStub(channel),
                args.namespace,
                args.timeout,
            )
            command: Command = args.run
            return command(client, args)
    except grpc.RpcError as error:
        _fail(_describe(error))
        return 1
    except BrokenPipeError:  # stdout closed early, as by `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # a certificate or key file
        _fail(f"{error.filename}: {error.strerror}")
        return 1
    except ValueError as error:  # TLS flags that do not go together
        _fail(str(error))
        return 1


def list_threads(client: _Client, args: argparse.Namespace) -> int:
    """``threads list``: SearchThreads, one page or (``--all``) every page."""
    which = thread_api.ThreadFilter(metadata_filter_json=_json_object(dict(args.metadata)))
    if args.status:
        which.status = _STATUSES[args.status]
    request = thread_api.SearchThreadsRequest(
        namespace=client.namespace,
        filter=which,
        sort_by=_SORT_BY[args.sort_by],
        sort_order=thread_api.SORT_ORDER_ASCENDING
        if args.asc
        else thread_api.SORT_ORDER_DESCENDING,
        page_size=args.limit,
    )
    threads: list[Document] = []
    while True:
        response = client.threads.SearchThreads(request, timeout=client.timeout)
        threads.extend(_thread_document(t, full=False) for t in response.threads)
        request.page_token = response.next_page_token
        if not args.all or not request.page_token:
            break
    if args.json:
        _print_json(threads)
        return 0
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
    print(_table(["THREAD_ID", "STATUS", "UPDATED", "CREATED", "METADATA"], rows))
    summary = _plural(len(threads), "thread")
    if request.page_token:  # only without --all: more threads match than were listed
        count = thread_api.CountThreadsRequest(namespace=client.namespace, filter=which)
        total = client.threads.CountThreads(count, timeout=client.timeout).count
        summary = f"{len(threads)} of {_plural(total, 'thread')} (--all lists every one)"
    print(summary)
    return 0


def show_thread(client: _Client, args: argparse.Namespace) -> int:
    """``threads show``: GetThread in the full view."""
    request = thread_api.GetThreadRequest(
        namespace=client.namespace, thread_id=args.thread_id, view=thread_api.THREAD_VIEW_FULL
    )
    try:
        response = client.threads.GetThread(request, timeout=client.timeout)
    except grpc.RpcError as error:
        if _code(error) != grpc.StatusCode.NOT_FOUND:
            raise
        _fail(f"NOT_FOUND: no thread {args.thread_id!r} in {_namespace_name(client.namespace)}")
        return 1
    thread = _thread_document(response.thread, full=True)
    if args.json:
        _print_json(thread)
        return 0
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
    for key, value in fields:
        print(f"{key + ':':<{width}} {value}".replace("\n", "\n" + " " * (width + 1)))
    return 0


def thread_history(client: _Client, args: argparse.Namespace) -> int:
    """``threads history``: ListCheckpoints without values, newest first."""
    if not _all_exist(client, [args.thread_id]):
        return 1
    request = checkpoint_api.ListCheckpointsRequest(
        namespace=client.namespace,
        thread_id=args.thread_id,
        checkpoint_ns=args.checkpoint_ns,
        page_size=args.limit,
        view=checkpoint_api.CHECKPOINT_VIEW_METADATA,
    )
    checkpoints: list[Document] = []
    for message in _checkpoints(client, request, args.limit):
        checkpoints.append(_checkpoint_document(message))
    if args.json:
        _print_json(checkpoints)
        return 0
    rows = [
        [
            c["checkpoint_id"],
            c["parent_checkpoint_id"] or "-",
            _cell(c["metadata"].get("step")),
            _cell(c["metadata"].get("source")),
            _when(c["created_at"]),
            ",".join(c["pending"]) or "-",
        ]
        for c in checkpoints
    ]
    print(_table(["CHECKPOINT_ID", "PARENT", "STEP", "SOURCE", "CREATED", "PENDING"], rows))
    print(_plural(len(checkpoints), "checkpoint"))
    return 0


def prune_threads(client: _Client, args: argparse.Namespace) -> int:
    """``threads prune``: PruneThreads, at most 1,000 threads per call."""
    thread_ids: list[str] = args.thread_ids
    if not _all_exist(client, thread_ids):
        return 1
    for start in range(0, len(thread_ids), _MAX_PAGE):
        request = checkpoint_api.PruneThreadsRequest(
            namespace=client.namespace,
            thread_ids=thread_ids[start : start + _MAX_PAGE],
            strategy=_PRUNE_STRATEGIES[args.strategy],
        )
        client.checkpoints.PruneThreads(request, timeout=client.timeout)
    if args.json:
        _print_json({"pruned": thread_ids, "strategy": args.strategy})
    else:
        print(f"pruned {_plural(len(thread_ids), 'thread')} ({args.strategy})")
    return 0


def delete_threads(client: _Client, args: argparse.Namespace) -> int:
    """``threads delete``: DeleteThread for each thread, after confirmation."""
    thread_ids: list[str] = args.thread_ids
    if not args.yes and not _confirm(thread_ids, client.namespace):
        return 2
    if not _all_exist(client, thread_ids):
        return 1
    for thread_id in thread_ids:
        request = checkpoint_api.DeleteThreadRequest(
            namespace=client.namespace, thread_id=thread_id
        )
        client.checkpoints.DeleteThread(request, timeout=client.timeout)
        if not args.json:
            print(f"deleted {thread_id}")
    if args.json:
        _print_json({"deleted": thread_ids})
    return 0


def watch_events(client: _Client, args: argparse.Namespace) -> int:
    """``threads watch``: WatchEvents, one line (or JSON object) per event, until interrupted.

    The stream has no deadline; ``--timeout`` does not apply. Each line ends with the event's
    cursor, to resume with ``--after``.
    """
    request = thread_api.WatchEventsRequest(
        namespace=client.namespace,
        thread_id=args.thread_id or "",
        after_cursor=args.after,
        from_beginning=args.from_beginning,
    )
    stream = client.threads.WatchEvents(request)
    try:
        for response in stream:
            document = _event_document(response.event)
            if args.json:
                print(json.dumps(document, default=_json_default), flush=True)
            else:
                print(
                    f"{_when(document['time'])}  {document['kind']:<16}  "
                    f"{document['thread_id']}  {_cell(document['checkpoint_id'])}  "
                    f"{document['cursor']}",
                    flush=True,
                )
    except KeyboardInterrupt:
        stream.cancel()
    return 0


def _event_document(message: thread_pb.Event) -> Document:
    return {
        "kind": thread_pb.EventKind.Name(message.kind).removeprefix("EVENT_KIND_").lower(),
        "thread_id": message.thread_id,
        "checkpoint_ns": message.checkpoint_ns if message.checkpoint_id else None,
        "checkpoint_id": message.checkpoint_id or None,
        "source_thread_id": message.source_thread_id or None,
        "time": _datetime(message, "time"),
        "cursor": message.cursor,
    }


def _all_exist(client: _Client, thread_ids: Sequence[str]) -> bool:
    """Whether every thread exists; reports the first that does not (NOT_FOUND) if not.

    The RPCs succeed on an unknown thread (an empty history, nothing to prune or delete), which
    would hide a mistyped ID from an operator: check first, and change nothing if one is wrong.
    """
    for thread_id in dict.fromkeys(thread_ids):
        request = thread_api.GetThreadRequest(namespace=client.namespace, thread_id=thread_id)
        try:
            client.threads.GetThread(request, timeout=client.timeout)
        except grpc.RpcError as error:
            if _code(error) != grpc.StatusCode.NOT_FOUND:
                raise
            _fail(f"NOT_FOUND: no thread {thread_id!r} in {_namespace_name(client.namespace)}")
            return False
    return True


def _confirm(thread_ids: Sequence[str], namespace: str) -> bool:
    """Asks on the terminal; refuses outright when stdin is not one."""
    if not sys.stdin.isatty():
        _fail("refusing to delete without --yes (stdin is not a terminal)")
        return False
    question = (
        f"delete {_plural(len(thread_ids), 'thread')} ({', '.join(thread_ids)}) "
        f"in {_namespace_name(namespace)}? [y/N] "
    )
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    _fail("nothing deleted")
    return False


def _checkpoints(
    client: _Client, request: checkpoint_api.ListCheckpointsRequest, limit: int
) -> Iterator[checkpoint_pb.Checkpoint]:
    """Up to ``limit`` checkpoints, following pages (a page may come back short)."""
    remaining = limit
    while remaining > 0:
        request.page_size = remaining
        response = client.checkpoints.ListCheckpoints(request, timeout=client.timeout)
        yield from response.checkpoints[:remaining]
        remaining -= len(response.checkpoints)
        request.page_token = response.next_page_token
        if not request.page_token:
            return


# --- documents: what --json prints, and what the human output is formatted from ----------


def _thread_document(message: thread_pb.Thread, *, full: bool) -> Document:
    document: Document = {
        "thread_id": message.thread_id,
        "status": _STATUS_NAMES.get(message.status, "unknown"),
        "created_at": _datetime(message, "create_time"),
        "updated_at": _datetime(message, "update_time"),
        "latest_checkpoint_id": message.latest_checkpoint_id or None,
        "metadata": _parse_object(message.metadata_json),
        "ttl": None,
        "expires_at": _datetime(message, "expire_time"),
    }
    if message.HasField("ttl"):
        document["ttl"] = {
            "seconds": message.ttl.ttl.ToTimedelta().total_seconds(),
            "strategy": _TTL_STRATEGIES.get(message.ttl.strategy, "unknown"),
        }
    if full:
        document["checkpoint_count"] = message.checkpoint_count
        document["values_bytes"] = message.values_bytes
        document["writes_bytes"] = message.writes_bytes
    return document


def _checkpoint_document(message: checkpoint_pb.Checkpoint) -> Document:
    metadata = _parse_object(message.metadata_json)
    pending = [w.channel for w in message.pending_writes]
    return {
        "checkpoint_id": message.checkpoint_id,
        "parent_checkpoint_id": message.parent_checkpoint_id or None,
        "checkpoint_ns": message.checkpoint_ns,
        "step": metadata.get("step"),
        "source": metadata.get("source"),
        "created_at": _datetime(message, "create_time"),
        "pending": list(dict.fromkeys(pending)),  # each channel once, in order
        "metadata": metadata,
    }


def _datetime(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def _parse_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw or b"{}")
    return value if isinstance(value, dict) else {"": value}


def _json_object(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() if value else b""


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- human output ------------------------------------------------------------------------


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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _namespace_name(namespace: str) -> str:
    return f"namespace {namespace!r}" if namespace else "the default namespace"


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.Call) else None


def _describe(error: grpc.RpcError) -> str:
    if not isinstance(error, grpc.Call):
        return f"UNKNOWN: {error}"
    return f"{error.code().name}: {error.details()}"


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
