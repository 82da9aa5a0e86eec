"""``checkpoint-threads``: inspect and clean up the threads of a running checkpoint server.

A client of the service, built on ``GrpcSaver``'s thread catalog; ``checkpoint-server threads``
runs it too. Also ``python -m langgraph.checkpoint.grpc.cli``:

    checkpoint-threads list [--status S] [--metadata KEY=JSON ...] [--all]
    checkpoint-threads show THREAD_ID
    checkpoint-threads history THREAD_ID [--checkpoint-ns NS]
    checkpoint-threads prune THREAD_ID... [--strategy keep_latest|delete]
    checkpoint-threads delete THREAD_ID... --yes
    checkpoint-threads watch [THREAD_ID] [--after CURSOR] [--from-beginning]

Each prints a human-readable report, or one JSON document with ``--json``. Exit codes: 0 on
success, 1 when the server refuses a call (``error: CODE: details`` on stderr) or cannot be
reached, 2 on a usage error or a refused deletion. No value is ever deserialized: the command
needs neither the application's serializer nor its keys, and prints no payloads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import grpc
from langgraph.checkpoint.grpc import _cli_output as output
from langgraph.checkpoint.grpc._errors import GrpcSaverError
from langgraph.checkpoint.grpc._saver import GrpcSaver
from langgraph.checkpoint.grpc._security import (
    CA_FILE_ENV,
    CERT_FILE_ENV,
    KEY_FILE_ENV,
    SERVER_NAME_ENV,
    TOKEN_ENV,
    TlsConfig,
)
from langgraph.checkpoint.grpc._threads import SyncThreadsClient

_STATUSES = ("idle", "busy", "interrupted", "error")
_SORT_BY = ("updated_at", "created_at", "thread_id")
_PRUNE_STRATEGIES = ("keep_latest", "delete")
_MAX_PAGE = 1000  # the largest page_size
_DEFAULT_LISTEN = "127.0.0.1:50051"

Command = Callable[[SyncThreadsClient, argparse.Namespace], int]


# --- arguments ---------------------------------------------------------------------------


def parser(prog: str = "checkpoint-threads") -> argparse.ArgumentParser:
    """The command line: connection options on every subcommand, then its own."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=_default_address(),
        help="host:port, or grpcs://host:port for TLS, of the server (default: the local end "
        "of CHECKPOINT_SERVER_LISTEN, %(default)s)",
    )
    common.add_argument("--namespace", default="", help='tenant namespace (default "")')
    common.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token, as --token=VALUE when it starts with - (env {TOKEN_ENV}, which "
        "keeps it out of the process list)",
    )
    for flag, env, what in (
        ("--ca-file", CA_FILE_ENV, "PEM CA certificates to verify the server with"),
        ("--cert-file", CERT_FILE_ENV, "PEM client certificate, for mTLS"),
        ("--key-file", KEY_FILE_ENV, "PEM private key of the client certificate"),
    ):
        common.add_argument(
            flag,
            default=os.environ.get(env) or None,
            help=f"{what}; with a grpcs:// address (env {env})",
        )
    common.add_argument(
        "--tls-server-name",
        default=os.environ.get(SERVER_NAME_ENV) or None,
        help="the name the server's certificate must carry, when the address does not "
        f"(env {SERVER_NAME_ENV})",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="deadline of each call in seconds (default %(default)s)",
    )

    top = argparse.ArgumentParser(
        prog=prog, description="List, inspect, watch, prune or delete the threads of a server."
    )
    commands = top.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", parents=[common], help="search the threads")
    listing.add_argument("--status", choices=_STATUSES, help="only threads in this status")
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
        "--sort-by", choices=_SORT_BY, default="updated_at", help="default %(default)s"
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
        "--strategy", choices=_PRUNE_STRATEGIES, default="keep_latest", help="%(default)s"
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
    return top


def _default_address() -> str:
    """The address of a server on this host configured by the same environment (the image's).

    The local end of ``CHECKPOINT_SERVER_LISTEN``, over TLS when ``CHECKPOINT_SERVER_TLS_CERT``
    is set: ``checkpoint-server threads`` in the server's container needs no ``--address``.
    """
    listen = os.environ.get("CHECKPOINT_SERVER_LISTEN") or _DEFAULT_LISTEN
    host, _, port = listen.rpartition(":")
    local = f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "") else listen  # noqa: S104
    return f"grpcs://{local}" if os.environ.get("CHECKPOINT_SERVER_TLS_CERT") else local


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


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the command line and exits with its code."""
    sys.exit(run(parser().parse_args(_joined_cursor(sys.argv[1:] if argv is None else argv))))


def _joined_cursor(argv: Sequence[str]) -> list[str]:
    """``--after CURSOR`` as ``--after=CURSOR``.

    A cursor is URL-safe base64 and may begin with ``-``, which argparse takes for an option.
    """
    joined: list[str] = []
    rest = iter(argv)
    for arg in rest:
        joined.append(f"--after={next(rest, '')}" if arg == "--after" else arg)
    return joined


def run(args: argparse.Namespace) -> int:
    """Runs a parsed subcommand against the server; returns the exit code."""
    try:
        with _saver(args) as saver:
            command: Command = args.run
            return command(saver.threads, args)
    except GrpcSaverError as error:
        _fail(str(error))
        return 1
    except BrokenPipeError:  # stdout closed early, as by `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # a certificate or key file
        _fail(f"{error.filename}: {error.strerror}")
        return 1
    except ValueError as error:  # TLS flags that do not go together, an unknown scheme
        _fail(str(error))
        return 1


def _saver(args: argparse.Namespace) -> AbstractContextManager[GrpcSaver]:
    """``GrpcSaver.from_conn_string`` with the connection flags; TLS for ``grpcs://`` only."""
    tls = None
    if args.address.startswith("grpcs://"):
        tls = TlsConfig.from_files(
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            server_name=args.tls_server_name,
        )
    return GrpcSaver.from_conn_string(
        args.address,
        namespace=args.namespace,
        timeout=args.timeout,
        token=args.token,
        tls=tls,
        # An operator wants the reason (refused, a TLS handshake failed) at once, not a deadline.
        fail_fast=True,
    )


def list_threads(threads: SyncThreadsClient, args: argparse.Namespace) -> int:
    """``list``: one page of the matching threads or (``--all``) every page."""
    which: dict[str, Any] = {"metadata": dict(args.metadata) or None, "status": args.status}
    listed: list[output.Document] = []
    page_token = None
    while True:
        page = threads.search(
            **which,
            sort_by=args.sort_by,
            sort_order="asc" if args.asc else "desc",
            limit=args.limit,
            page_token=page_token,
        )
        listed.extend(output.thread_document(t) for t in page.threads)
        page_token = page.next_page_token
        if not args.all or page_token is None:
            break
    if args.json:
        output.print_json(listed)
        return 0
    print(output.thread_table(listed))
    summary = output.plural(len(listed), "thread")
    if page_token is not None:  # only without --all: more threads match than were listed
        total = threads.count(**which)
        summary = f"{len(listed)} of {output.plural(total, 'thread')} (--all lists every one)"
    print(summary)
    return 0


def show_thread(threads: SyncThreadsClient, args: argparse.Namespace) -> int:
    """``show``: one thread with its counts and sizes."""
    try:
        thread = output.thread_document(threads.get(args.thread_id, full=True))
    except GrpcSaverError as error:
        if error.code != grpc.StatusCode.NOT_FOUND:
            raise
        _not_found(args.thread_id, args.namespace)
        return 1
    if args.json:
        output.print_json(thread)
    else:
        print(output.thread_fields(thread))
    return 0


def thread_history(threads: SyncThreadsClient, args: argparse.Namespace) -> int:
    """``history``: the thread's checkpoints, newest first, without their values."""
    if not _all_exist(threads, [args.thread_id], args.namespace):
        return 1
    summaries = threads.checkpoints(
        args.thread_id, checkpoint_ns=args.checkpoint_ns, limit=args.limit
    )
    checkpoints = [output.checkpoint_document(c) for c in summaries]
    if args.json:
        output.print_json(checkpoints)
        return 0
    print(output.checkpoint_table(checkpoints))
    print(output.plural(len(checkpoints), "checkpoint"))
    return 0


def prune_threads(threads: SyncThreadsClient, args: argparse.Namespace) -> int:
    """``prune``: PruneThreads, at most 1,000 threads per call."""
    thread_ids: list[str] = args.thread_ids
    if not _all_exist(threads, thread_ids, args.namespace):
        return 1
    threads.prune(thread_ids, strategy=args.strategy)  # in calls of up to 1,000 IDs
    if args.json:
        output.print_json({"pruned": thread_ids, "strategy": args.strategy})
    else:
        print(f"pruned {output.plural(len(thread_ids), 'thread')} ({args.strategy})")
    return 0


def delete_threads(threads: SyncThreadsClient, args: argparse.Namespace) -> int:
    """``delete``: each thread with everything stored for it, after confirmation."""
    thread_ids: list[str] = args.thread_ids
    if not args.yes and not _confirm(thread_ids, args.namespace):
        return 2
    if not _all_exist(threads, thread_ids, args.namespace):
        return 1
    for thread_id in thread_ids:
        threads.delete(thread_id)
        if not args.json:
            print(f"deleted {thread_id}")
    if args.json:
        output.print_json({"deleted": thread_ids})
    return 0


def watch_events(threads: SyncThreadsClient, args: argparse.Namespace) -> int:
    """``watch``: one line (or JSON object) per event, until interrupted.

    The stream has no deadline; ``--timeout`` does not apply. Each line ends with the event's
    cursor, to resume with ``--after``. A dropped connection ends the command (exit 1) rather
    than being retried in silence: the last cursor printed resumes without a gap.
    """
    events = threads.watch(
        args.thread_id,
        after=args.after or None,
        from_beginning=args.from_beginning,
        reconnect=False,
    )
    try:
        for event in events:
            document = output.event_document(event)
            if args.json:
                print(json.dumps(document, default=output.json_default), flush=True)
            else:
                print(output.event_line(document), flush=True)
    except KeyboardInterrupt:
        pass  # closing the saver's channel on the way out ends the stream
    return 0


def _all_exist(threads: SyncThreadsClient, thread_ids: Sequence[str], namespace: str) -> bool:
    """Whether every thread exists; reports the first that does not (NOT_FOUND) if not.

    The RPCs succeed on an unknown thread (an empty history, nothing to prune or delete), which
    would hide a mistyped ID from an operator: check first, and change nothing if one is wrong.
    """
    for thread_id in dict.fromkeys(thread_ids):
        try:
            threads.get(thread_id, full=False)
        except GrpcSaverError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise
            _not_found(thread_id, namespace)
            return False
    return True


def _confirm(thread_ids: Sequence[str], namespace: str) -> bool:
    """Asks on the terminal; refuses outright when stdin is not one."""
    if not sys.stdin.isatty():
        _fail("refusing to delete without --yes (stdin is not a terminal)")
        return False
    question = (
        f"delete {output.plural(len(thread_ids), 'thread')} ({', '.join(thread_ids)}) "
        f"in {output.namespace_name(namespace)}? [y/N] "
    )
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    _fail("nothing deleted")
    return False


def _not_found(thread_id: str, namespace: str) -> None:
    _fail(f"NOT_FOUND: no thread {thread_id!r} in {output.namespace_name(namespace)}")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


if __name__ == "__main__":
    main()
