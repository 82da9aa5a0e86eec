"""The ``checkpoint-server`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from checkpoint_server import client_channel, config, runtime, threads_cli
from checkpoint_server.auth import hash_token
from checkpoint_server.server import serve
from checkpoint_server.storage import open_database


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkpoint-server", description="The LangGraph checkpoint service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        default=os.environ.get("CHECKPOINT_SERVER_DATABASE_URL", config.DEFAULT_DATABASE_URL),
        help="sqlite:///path or postgresql://user@host:port/db "
        "(env CHECKPOINT_SERVER_DATABASE_URL; default %(default)s)",
    )
    run = commands.add_parser(
        "serve", parents=[database], help="serve until SIGTERM, migrating the database first"
    )
    run.add_argument(
        "--listen",
        default=os.environ.get("CHECKPOINT_SERVER_LISTEN", config.DEFAULT_LISTEN),
        help="host:port to serve on (env CHECKPOINT_SERVER_LISTEN; default %(default)s)",
    )
    run.add_argument(
        "--max-message-bytes",
        type=int,
        default=int(
            os.environ.get("CHECKPOINT_SERVER_MAX_MESSAGE_BYTES", config.DEFAULT_MAX_MESSAGE_BYTES)
        ),
        help="largest request or response in bytes "
        "(env CHECKPOINT_SERVER_MAX_MESSAGE_BYTES; default %(default)s)",
    )
    run.add_argument(
        "--max-request-bytes-in-flight",
        type=_positive_int,
        default=_env_int("CHECKPOINT_SERVER_MAX_REQUEST_BYTES_IN_FLIGHT")
        or config.DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT,
        help="request bytes all calls together may hold; past it RESOURCE_EXHAUSTED "
        "(env CHECKPOINT_SERVER_MAX_REQUEST_BYTES_IN_FLIGHT; default %(default)s = 128 MiB)",
    )
    _add_watcher_arguments(run)
    run.add_argument(
        "--thread-ttl-seconds",
        type=_positive_int,
        default=_env_int("CHECKPOINT_SERVER_THREAD_TTL_SECONDS"),
        help="time to live of threads without their own, counted from their last update "
        "(env CHECKPOINT_SERVER_THREAD_TTL_SECONDS; default: none, threads live until deleted)",
    )
    run.add_argument(
        "--thread-ttl-strategy",
        choices=("delete", "keep_latest"),
        default=os.environ.get("CHECKPOINT_SERVER_THREAD_TTL_STRATEGY", "delete"),
        help="what that default time to live does when it runs out "
        "(env CHECKPOINT_SERVER_THREAD_TTL_STRATEGY; default %(default)s)",
    )
    run.add_argument(
        "--sweep-interval-seconds",
        type=float,
        default=float(os.environ.get("CHECKPOINT_SERVER_SWEEP_INTERVAL_SECONDS", "60")),
        help="how often expired threads are swept "
        "(env CHECKPOINT_SERVER_SWEEP_INTERVAL_SECONDS; default %(default)s)",
    )
    run.add_argument(
        "--event-retention-seconds",
        type=float,
        default=float(os.environ.get("CHECKPOINT_SERVER_EVENT_RETENTION_SECONDS", 7 * 24 * 3600)),
        help="how long events stay for watchers to resume from "
        "(env CHECKPOINT_SERVER_EVENT_RETENTION_SECONDS; default %(default)s = 7 days)",
    )
    _add_security_arguments(run)
    commands.add_parser(
        "migrate", parents=[database], help="bring the database to the current schema and exit"
    )
    probe = commands.add_parser(
        "health", help="exit 0 if the server at --address reports SERVING (for probes)"
    )
    probe.add_argument(
        "--address",
        default=_local(os.environ.get("CHECKPOINT_SERVER_LISTEN", config.DEFAULT_LISTEN)),
        help="host:port, or grpcs://host:port for TLS, of the server "
        "(default: the local end of CHECKPOINT_SERVER_LISTEN)",
    )
    client_channel.add_arguments(probe)
    commands.add_parser(
        "hash-token",
        help="read a token from stdin, print the sha256 the auth file stores for it",
    )
    threads_cli.add_parser(
        commands, _local(os.environ.get("CHECKPOINT_SERVER_LISTEN", config.DEFAULT_LISTEN))
    )
    return parser


def _add_watcher_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--max-watchers",
        type=_positive_int,
        default=_env_int("CHECKPOINT_SERVER_MAX_WATCHERS") or config.DEFAULT_MAX_WATCHERS,
        help="WatchEvents streams open at once on this server; past it RESOURCE_EXHAUSTED "
        "(env CHECKPOINT_SERVER_MAX_WATCHERS; default %(default)s)",
    )
    run.add_argument(
        "--max-watchers-per-namespace",
        type=_positive_int,
        default=_env_int("CHECKPOINT_SERVER_MAX_WATCHERS_PER_NAMESPACE")
        or config.DEFAULT_MAX_WATCHERS_PER_NAMESPACE,
        help="WatchEvents streams open at once in one namespace; past it RESOURCE_EXHAUSTED "
        "(env CHECKPOINT_SERVER_MAX_WATCHERS_PER_NAMESPACE; default %(default)s)",
    )
    run.add_argument(
        "--keepalive-seconds",
        type=_keepalive_seconds,
        default=_keepalive_seconds(
            os.environ.get("CHECKPOINT_SERVER_KEEPALIVE_SECONDS", config.DEFAULT_KEEPALIVE_SECONDS)
        ),
        help="ping each connection this often, and drop it (freeing its watch streams) when "
        "no answer comes as long (env CHECKPOINT_SERVER_KEEPALIVE_SECONDS; default %(default)s)",
    )


def _add_security_arguments(run: argparse.ArgumentParser) -> None:
    def path(env: str) -> Path | None:
        value = os.environ.get(env)
        return Path(value) if value else None

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
        help="serve a non-loopback address without --auth-file: anyone reaching it gets in",
    )
    for flag, env, what in (
        ("--tls-cert", "CHECKPOINT_SERVER_TLS_CERT", "PEM certificate chain: serve TLS"),
        ("--tls-key", "CHECKPOINT_SERVER_TLS_KEY", "PEM private key of --tls-cert"),
        (
            "--tls-client-ca",
            "CHECKPOINT_SERVER_TLS_CLIENT_CA",
            "PEM CA certificates: require client certificates signed by them (mTLS)",
        ),
    ):
        run.add_argument(flag, type=Path, default=path(env), help=f"{what} (env {env})")
    run.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("CHECKPOINT_SERVER_REFLECTION", "on") != "off",
        help="serve gRPC reflection, the schema without data "
        "(env CHECKPOINT_SERVER_REFLECTION=on|off; default on)",
    )


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _keepalive_seconds(value: str | float) -> float:
    number = float(value)
    # Below a second, pings would take over the connection; nan compares false.
    if not 1 <= number <= 24 * 3600:
        raise argparse.ArgumentTypeError("must be between 1 and 86400 seconds")
    return number


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return _positive_int(value) if value else None


def _local(listen: str) -> str:
    """The address to reach a server listening on ``listen`` from the same host."""
    host, _, port = listen.rpartition(":")
    local = f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "") else listen  # noqa: S104
    # A server given TLS in the environment (as in the image) is reached over TLS.
    return f"grpcs://{local}" if os.environ.get("CHECKPOINT_SERVER_TLS_CERT") else local


def _health(args: argparse.Namespace) -> int:
    address = args.address
    try:
        channel = client_channel.open_channel(args, [])
    except OSError as error:  # a certificate or key file
        print(f"{error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    with channel:
        try:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return 0 if serving else 1


async def _migrate(database_url: str) -> None:
    database = await open_database(database_url, pool_size=1)
    await database.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the command line."""
    args = _parser().parse_args(argv)
    if args.command == "health":
        sys.exit(_health(args))
    if args.command == "hash-token":
        token = sys.stdin.readline().strip()
        if not token:
            sys.exit("checkpoint-server: hash-token reads a token on stdin, got none")
        print(hash_token(token))
        return
    if args.command == "threads":
        sys.exit(threads_cli.run(args))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "migrate":
        asyncio.run(_migrate(args.database_url))
        return
    settings = config.Settings(
        database_url=args.database_url,
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
