"""The ``checkpoint-server`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from checkpoint_server import config, runtime, threads_cli
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
    commands.add_parser(
        "migrate", parents=[database], help="bring the database to the current schema and exit"
    )
    probe = commands.add_parser(
        "health", help="exit 0 if the server at --address reports SERVING (for probes)"
    )
    probe.add_argument(
        "--address",
        default=_local(os.environ.get("CHECKPOINT_SERVER_LISTEN", config.DEFAULT_LISTEN)),
        help="host:port of the server (default: the local end of CHECKPOINT_SERVER_LISTEN)",
    )
    threads_cli.add_parser(
        commands, _local(os.environ.get("CHECKPOINT_SERVER_LISTEN", config.DEFAULT_LISTEN))
    )
    return parser


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return _positive_int(value) if value else None


def _local(listen: str) -> str:
    """The address to reach a server listening on ``listen`` from the same host."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "") else listen  # noqa: S104


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
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
        sys.exit(_health(args.address))
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
        thread_ttl_seconds=args.thread_ttl_seconds,
        thread_ttl_strategy=args.thread_ttl_strategy,
        sweep_interval_seconds=args.sweep_interval_seconds,
        event_retention_seconds=args.event_retention_seconds,
    )
    runtime.run(serve(settings))
