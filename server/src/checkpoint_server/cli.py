"""The ``checkpoint-server`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from checkpoint_server import config, probe
from checkpoint_server.options import (
    LOG_FORMATS,
    LOG_LEVELS,
    Parser,
    SettingError,
    address,
    boolean,
    choice,
    env,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)

_TTL_STRATEGIES = ("delete", "keep_latest")
# `checkpoint-server threads ...` runs this module of the client package, in its place.
_THREADS_MODULE = "langgraph.checkpoint.grpc.cli"
_CLIENT_DISTRIBUTION = "langgraph-checkpoint-grpc"

# Server modules (SQLAlchemy, Alembic, the servicers), and asyncio and logging, are imported by
# the commands that use them: `checkpoint-server health` runs as a container probe and must
# start fast, even on a loaded host.


class _Version(argparse.Action):
    """``--version``: the installed version, read only when asked (its module is slow to load)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from importlib import metadata

        print(f"{parser.prog} {metadata.version('langgraph-checkpoint-server')}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="checkpoint-server", description="The LangGraph checkpoint service.")
    parser.add_argument("--version", action=_Version)
    # Subcommands get the same one-line errors (add_subparsers builds them as type(parser)).
    commands: Any = parser.add_subparsers(dest="command", required=True)
    database = Parser(add_help=False)
    database.add_argument(
        "--database-url",
        default=env("CHECKPOINT_SERVER_DATABASE_URL", str, config.DEFAULT_DATABASE_URL),
        help="sqlite:///path or postgresql://user@host:port/db "
        "(env CHECKPOINT_SERVER_DATABASE_URL; default %(default)s)",
    )
    database.add_argument(
        "--database-wait-seconds",
        type=non_negative_seconds,
        default=env(
            "CHECKPOINT_SERVER_DATABASE_WAIT_SECONDS",
            non_negative_seconds,
            config.DEFAULT_DATABASE_WAIT_SECONDS,
        ),
        help="how long start-up waits for an unreachable PostgreSQL, retrying "
        "(env CHECKPOINT_SERVER_DATABASE_WAIT_SECONDS; default %(default)s; 0: fail at once)",
    )
    logs = Parser(add_help=False)
    logs.add_argument(
        "--log-format",
        type=choice(LOG_FORMATS),
        default=env("CHECKPOINT_SERVER_LOG_FORMAT", choice(LOG_FORMATS), None),
        help="text or json (env CHECKPOINT_SERVER_LOG_FORMAT; "
        "default: json unless stderr is a terminal)",
    )
    logs.add_argument(
        "--log-level",
        type=choice(LOG_LEVELS),
        default=env("CHECKPOINT_SERVER_LOG_LEVEL", choice(LOG_LEVELS), "info"),
        help="debug, info, warning or error (env CHECKPOINT_SERVER_LOG_LEVEL; default %(default)s)",
    )
    run = commands.add_parser(
        "serve",
        parents=[database, logs],
        help="serve until SIGTERM, migrating the database first",
    )
    run.add_argument(
        "--listen",
        type=address,
        default=env("CHECKPOINT_SERVER_LISTEN", address, config.DEFAULT_LISTEN),
        help="host:port to serve on (env CHECKPOINT_SERVER_LISTEN; default %(default)s)",
    )
    run.add_argument(
        "--reuse-port",
        action="store_true",
        default=env("CHECKPOINT_SERVER_REUSE_PORT", boolean, False),
        help="let other processes serve the same port (SO_REUSEPORT); without it a port "
        "already served is an error (env CHECKPOINT_SERVER_REUSE_PORT)",
    )
    run.add_argument(
        "--metrics-listen",
        type=address,
        default=env("CHECKPOINT_SERVER_METRICS_LISTEN", address, None),
        help="host:port to serve Prometheus metrics on, over HTTP at /metrics "
        "(env CHECKPOINT_SERVER_METRICS_LISTEN; default: off)",
    )
    run.add_argument(
        "--max-message-bytes",
        type=positive_int,
        default=env(
            "CHECKPOINT_SERVER_MAX_MESSAGE_BYTES", positive_int, config.DEFAULT_MAX_MESSAGE_BYTES
        ),
        help="largest request or response in bytes "
        "(env CHECKPOINT_SERVER_MAX_MESSAGE_BYTES; default %(default)s)",
    )
    run.add_argument(
        "--max-request-bytes-in-flight",
        type=positive_int,
        default=env(
            "CHECKPOINT_SERVER_MAX_REQUEST_BYTES_IN_FLIGHT",
            positive_int,
            config.DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT,
        ),
        help="request bytes all calls together may hold; past it RESOURCE_EXHAUSTED "
        "(env CHECKPOINT_SERVER_MAX_REQUEST_BYTES_IN_FLIGHT; default %(default)s = 128 MiB)",
    )
    _add_watcher_arguments(run)
    run.add_argument(
        "--thread-ttl-seconds",
        type=positive_int,
        default=env("CHECKPOINT_SERVER_THREAD_TTL_SECONDS", positive_int, None),
        help="time to live of threads without their own, counted from their last update "
        "(env CHECKPOINT_SERVER_THREAD_TTL_SECONDS; default: none, threads live until deleted)",
    )
    run.add_argument(
        "--thread-ttl-strategy",
        type=choice(_TTL_STRATEGIES),
        default=env("CHECKPOINT_SERVER_THREAD_TTL_STRATEGY", choice(_TTL_STRATEGIES), "delete"),
        help="what that default time to live does when it runs out "
        "(env CHECKPOINT_SERVER_THREAD_TTL_STRATEGY; default %(default)s)",
    )
    run.add_argument(
        "--sweep-interval-seconds",
        type=positive_seconds,
        default=env("CHECKPOINT_SERVER_SWEEP_INTERVAL_SECONDS", positive_seconds, 60.0),
        help="how often expired threads are swept "
        "(env CHECKPOINT_SERVER_SWEEP_INTERVAL_SECONDS; default %(default)s)",
    )
    run.add_argument(
        "--event-retention-seconds",
        type=positive_seconds,
        default=env("CHECKPOINT_SERVER_EVENT_RETENTION_SECONDS", positive_seconds, 7 * 24 * 3600.0),
        help="how long events stay for watchers to resume from "
        "(env CHECKPOINT_SERVER_EVENT_RETENTION_SECONDS; default %(default)s = 7 days)",
    )
    run.add_argument(
        "--max-group-writes",
        type=positive_int,
        default=env(
            "CHECKPOINT_SERVER_MAX_GROUP_WRITES", positive_int, config.DEFAULT_MAX_GROUP_WRITES
        ),
        help="writes of one namespace that may share a transaction; 1: every write call "
        "its own (env CHECKPOINT_SERVER_MAX_GROUP_WRITES; default %(default)s)",
    )
    _add_security_arguments(run)
    commands.add_parser(
        "migrate",
        parents=[database, logs],
        help="bring the database to the current schema and exit",
    )
    health = commands.add_parser(
        "health", help="exit 0 if the server at --address reports SERVING (for probes)"
    )
    probe.add_arguments(health, _local_address())
    commands.add_parser(
        "hash-token",
        help="read a token from stdin, print the sha256 the auth file stores for it",
    )
    # Only listed here: main() hands `threads ...` to the client's command before parsing.
    commands.add_parser(
        "threads",
        help=f"list, inspect, watch, prune or delete threads (checkpoint-threads, from "
        f"{_CLIENT_DISTRIBUTION}; see checkpoint-server threads --help)",
    )
    return parser


def _add_watcher_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--max-watchers",
        type=positive_int,
        default=env("CHECKPOINT_SERVER_MAX_WATCHERS", positive_int, config.DEFAULT_MAX_WATCHERS),
        help="WatchEvents streams open at once on this server; past it RESOURCE_EXHAUSTED "
        "(env CHECKPOINT_SERVER_MAX_WATCHERS; default %(default)s)",
    )
    run.add_argument(
        "--max-watchers-per-namespace",
        type=positive_int,
        default=env(
            "CHECKPOINT_SERVER_MAX_WATCHERS_PER_NAMESPACE",
            positive_int,
            config.DEFAULT_MAX_WATCHERS_PER_NAMESPACE,
        ),
        help="WatchEvents streams open at once in one namespace; past it RESOURCE_EXHAUSTED "
        "(env CHECKPOINT_SERVER_MAX_WATCHERS_PER_NAMESPACE; default %(default)s)",
    )
    run.add_argument(
        "--keepalive-seconds",
        type=_keepalive_seconds,
        default=env(
            "CHECKPOINT_SERVER_KEEPALIVE_SECONDS",
            _keepalive_seconds,
            config.DEFAULT_KEEPALIVE_SECONDS,
        ),
        help="ping each connection this often, and drop it (freeing its watch streams) when "
        "no answer comes as long (env CHECKPOINT_SERVER_KEEPALIVE_SECONDS; default %(default)s)",
    )


def _add_security_arguments(run: argparse.ArgumentParser) -> None:
    def path(variable: str) -> Path | None:
        return env(variable, Path, None)

    run.add_argument(
        "--auth-file",
        type=Path,
        default=path("CHECKPOINT_SERVER_AUTH_FILE"),
        help="TOML file of tokens and certificates with their namespaces and roles; "
        "reloaded on SIGHUP or change (env CHECKPOINT_SERVER_AUTH_FILE; default: auth off)",
    )
    run.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=env("CHECKPOINT_SERVER_INSECURE_NO_AUTH", boolean, False),
        help="serve a non-loopback address without --auth-file: anyone reaching it gets in "
        "(env CHECKPOINT_SERVER_INSECURE_NO_AUTH)",
    )
    for flag, variable, what in (
        ("--tls-cert", "CHECKPOINT_SERVER_TLS_CERT", "PEM certificate chain: serve TLS"),
        ("--tls-key", "CHECKPOINT_SERVER_TLS_KEY", "PEM private key of --tls-cert"),
        (
            "--tls-client-ca",
            "CHECKPOINT_SERVER_TLS_CLIENT_CA",
            "PEM CA certificates: require client certificates signed by them (mTLS)",
        ),
    ):
        run.add_argument(flag, type=Path, default=path(variable), help=f"{what} (env {variable})")
    run.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=env("CHECKPOINT_SERVER_REFLECTION", boolean, True),
        help="serve gRPC reflection, the schema without data "
        "(env CHECKPOINT_SERVER_REFLECTION=on|off; default on)",
    )


def _keepalive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 1 to 86400, not {value!r}"
        ) from None
    # Below a second, pings would take over the connection; nan compares false.
    if not 1 <= number <= 24 * 3600:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 1 to 86400, not {value!r}"
        )
    return number


def _local_address() -> str:
    """The address to reach a server configured by this environment from the same host."""
    listen = env("CHECKPOINT_SERVER_LISTEN", address, config.DEFAULT_LISTEN)
    host, _, port = listen.rpartition(":")
    local = f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "") else listen  # noqa: S104
    # A server given TLS in the environment (as in the image) is reached over TLS.
    tls = env("CHECKPOINT_SERVER_TLS_CERT", Path, None) is not None
    return f"grpcs://{local}" if tls else local


def _threads(argv: Sequence[str]) -> NoReturn:
    """Becomes ``python -m langgraph.checkpoint.grpc.cli ARGV``, the client's own command.

    The server never imports LangGraph or the client: the command runs in their place, in this
    process (same PID, terminal and signals), or says what to install.
    """
    if not _importable(_THREADS_MODULE):
        print(
            f"checkpoint-server threads: needs the Python client: "
            f"pip install {_CLIENT_DISTRIBUTION}",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.stdout.flush()
    # -P: the working directory (in the image, the data volume) stays off the module path.
    os.execv(sys.executable, [sys.executable, "-P", "-m", _THREADS_MODULE, *argv])  # noqa: S606


def _importable(module: str) -> bool:
    """Whether ``module`` is on the module path, found without importing any of it.

    ``importlib.util.find_spec`` would import its parent packages: all of the client.
    """
    from importlib.machinery import PathFinder

    locations: list[str] | None = None
    for name in module.split("."):
        spec = PathFinder.find_spec(name, locations)
        if spec is None:
            return False
        locations = list(spec.submodule_search_locations or ())
    return True


async def _migrate(database_url: str, wait_seconds: float) -> None:
    from checkpoint_server.startup import open_when_reachable

    database = await open_when_reachable(database_url, pool_size=1, wait_seconds=wait_seconds)
    await database.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the command line."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["threads"]:
        _threads(arguments[1:])
    try:
        args = _parser().parse_args(arguments)
    except SettingError as error:
        print(f"checkpoint-server: error: {error}", file=sys.stderr)
        sys.exit(2)
    if args.command == "health":
        sys.exit(probe.run(args))
    if args.command == "hash-token":
        from checkpoint_server.auth import hash_token

        token = sys.stdin.readline().strip()
        if not token:
            sys.exit("checkpoint-server: hash-token reads a token on stdin, got none")
        print(hash_token(token))
        return
    import logging

    from checkpoint_server import logs
    from checkpoint_server.startup import StartupError

    logs.configure(args.log_format, args.log_level)
    try:
        _run(args)
    except StartupError as error:
        # One line the operator can act on; a traceback here would only bury it.
        logging.getLogger("checkpoint_server").critical("%s", error)
        sys.exit(1)


def _run(args: argparse.Namespace) -> None:
    if args.command == "migrate":
        import asyncio

        asyncio.run(_migrate(args.database_url, args.database_wait_seconds))
        return
    from checkpoint_server import runtime
    from checkpoint_server.server import serve

    settings = config.Settings(
        database_url=args.database_url,
        database_wait_seconds=args.database_wait_seconds,
        reuse_port=args.reuse_port,
        metrics_listen=args.metrics_listen,
        listen=args.listen,
        max_message_bytes=args.max_message_bytes,
        max_request_bytes_in_flight=args.max_request_bytes_in_flight,
        max_watchers=args.max_watchers,
        max_watchers_per_namespace=args.max_watchers_per_namespace,
        keepalive_seconds=args.keepalive_seconds,
        thread_ttl_seconds=args.thread_ttl_seconds,
        thread_ttl_strategy=args.thread_ttl_strategy,
        sweep_interval_seconds=args.sweep_interval_seconds,
        event_retention_seconds=args.event_retention_seconds,
        max_group_writes=args.max_group_writes,
        auth_file=args.auth_file,
        insecure_no_auth=args.insecure_no_auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        reflection=args.reflection,
    )
    try:
        runtime.run(serve(settings))
    except config.ConfigurationError as error:
        sys.exit(f"checkpoint-server: {error}")
