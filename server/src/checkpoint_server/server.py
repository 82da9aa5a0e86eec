"""Building the gRPC server, and running it until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from sqlalchemy.exc import SQLAlchemyError

from checkpoint_server import metrics, runtime
from checkpoint_server.api.auth import Gate
from checkpoint_server.api.inflight import RequestBudget
from checkpoint_server.api.observe import observe
from checkpoint_server.api.readiness import follow_database
from checkpoint_server.api.servicer import CheckpointServicer
from checkpoint_server.api.thread_servicer import ThreadServicer
from checkpoint_server.api.tokens import Sealer
from checkpoint_server.api.watch_slots import WatchSlots
from checkpoint_server.auth import PolicySource
from checkpoint_server.auth.exposure import check_exposure
from checkpoint_server.config import Settings
from checkpoint_server.startup import cannot_serve, check_port_free, open_when_reachable
from checkpoint_server.storage import (
    CheckpointStore,
    Database,
    EventLog,
    LeaseStore,
    ThreadCatalog,
    ThreadLifecycle,
    TtlPolicy,
    describe_error,
    listen,
    token_key,
)
from checkpoint_server.tls import server_credentials

logger = logging.getLogger(__name__)

_SERVICE = api.DESCRIPTOR.services_by_name["CheckpointService"]
_THREADS = thread_api.DESCRIPTOR.services_by_name["ThreadService"]


@dataclass
class RunningServer:
    """A started server and what it owns."""

    server: grpc.aio.Server
    database: Database
    health: health.aio.HealthServicer
    port: int
    tasks: list[asyncio.Task[None]]
    events: EventLog
    metrics_endpoint: metrics.MetricsEndpoint | None = None

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish, then closes metrics and database."""
        await self.health.enter_graceful_shutdown()
        self.events.close()  # watch streams end; other calls get the grace to finish
        await self.server.stop(grace)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        await self.database.dispose()


def _handlers(
    service: Any, module: Any, servicer: Any, *, budget: RequestBudget, gate: Gate
) -> grpc.GenericRpcHandler:
    """A service's handlers, parsing requests so that bad bytes reach the servicer.

    Each call passes ``gate`` (authentication and authorization) before the servicer, and its
    request is counted against ``budget`` while the call runs. Every call, a refused one too,
    gets its access-log line and its metrics.
    """
    handlers = {}
    for method in service.methods:
        request_type: type[Message] = getattr(module, method.input_type.name)
        response_type: type[Message] = getattr(module, method.output_type.name)
        # Outermost first: the access log and metrics (which see the budget's and the gate's
        # refusals too), then the request budget, then authentication and authorization,
        # then the servicer.
        behavior = gate.guard(method, getattr(servicer, method.name))
        if method.server_streaming:
            make, behavior = grpc.unary_stream_rpc_method_handler, budget.stream(behavior)
        else:
            make, behavior = grpc.unary_unary_rpc_method_handler, budget.unary(behavior)
        handlers[method.name] = make(
            observe(method.name, behavior, server_streaming=method.server_streaming),
            request_deserializer=budget.deserializer(request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


async def start(settings: Settings) -> RunningServer:
    """Opens the database (migrating it) and starts serving.

    Raises:
        ConfigurationError: The auth or TLS settings are unusable, or would expose the
            service without authentication.

    """
    policy = PolicySource(settings.auth_file) if settings.auth_file else None
    gate, credentials = Gate(policy), server_credentials(settings)
    check_exposure(
        settings.listen,
        auth=policy is not None,
        tls=credentials is not None,
        insecure_no_auth=settings.insecure_no_auth,
    )
    check_port_free(settings)
    database = await open_when_reachable(
        settings.database_url,
        pool_size=settings.pool_size,
        wait_seconds=settings.database_wait_seconds,
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # gRPC shares ports by default: a second server would silently take half of the
            # new connections, each writing to whatever database it was given.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            *_keepalive(settings.keepalive_seconds),
        ]
    )
    ttl = TtlPolicy(settings.thread_ttl_seconds, settings.thread_ttl_strategy)
    sealer = Sealer(await token_key(database))
    leases = LeaseStore(database)
    servicer = CheckpointServicer(
        CheckpointStore(
            database,
            ttl,
            max_group_items=settings.max_group_writes,
            on_group=metrics.record_group,
        ),
        ThreadLifecycle(database, ttl),
        leases,
        max_message_bytes=settings.max_message_bytes,
        sealer=sealer,
    )
    catalog = ThreadCatalog(database, ttl)
    event_log = EventLog(database, settings.event_retention_seconds)
    budget = RequestBudget(settings.max_request_bytes_in_flight)
    server.add_generic_rpc_handlers(
        [
            _handlers(_SERVICE, api, servicer, budget=budget, gate=gate),
            _handlers(
                _THREADS,
                thread_api,
                ThreadServicer(
                    catalog,
                    event_log,
                    sealer,
                    WatchSlots(settings.max_watchers_per_namespace, settings.max_watchers),
                ),
                budget=budget,
                gate=gate,
            ),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (_SERVICE.full_name, _THREADS.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
        )
    try:
        if credentials is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, credentials)
        endpoint = None
        if settings.metrics_listen is not None:
            endpoint = metrics.MetricsEndpoint(settings.metrics_listen, database)
    except (RuntimeError, OSError) as error:
        await database.dispose()
        # add_insecure_port raises RuntimeError, the metrics' HTTP server OSError.
        raise cannot_serve(
            "--listen" if isinstance(error, RuntimeError) else "--metrics-listen", settings
        ) from None
    await server.start()
    names = ("", _SERVICE.full_name, _THREADS.full_name)
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    tasks = [
        asyncio.create_task(
            _sweep(
                catalog, leases, settings.sweep_interval_seconds, settings.event_retention_seconds
            )
        )
    ]
    tasks.append(
        asyncio.create_task(
            follow_database(database, health_servicer, names, settings.health_probe_seconds)
        )
    )
    if not database.is_sqlite:
        tasks.append(asyncio.create_task(listen(database.url, database.hub)))
    if policy is not None:
        tasks.append(asyncio.create_task(policy.watch()))
    logger.info("serving %s on port %d", _SERVICE.full_name, port)
    return RunningServer(server, database, health_servicer, port, tasks, event_log, endpoint)


def _keepalive(seconds: float) -> list[tuple[str, int]]:
    """Pings each connection every ``seconds`` and drops it if no answer comes as long.

    An idle watch stream sends nothing, so without pings a client that vanished (host down,
    network cut) would hold its stream, and its watcher slot, until TCP gives up: hours.
    """
    milliseconds = int(seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", milliseconds),
        # With gRPC 1.85 here, keepalive_timeout_ms alone never dropped a silent peer;
        # ping_timeout_ms did.
        ("grpc.keepalive_timeout_ms", milliseconds),
        ("grpc.http2.ping_timeout_ms", milliseconds),
        # Idle watch streams carry no data between pings: keep pinging anyway.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_time_between_pings_ms", milliseconds),
    ]


async def _sweep(
    catalog: ThreadCatalog, leases: LeaseStore, interval: float, event_retention: float
) -> None:
    """Applies expired threads' time to live and drops old events and leases, every ``interval`` s.

    It runs whether or not threads have a time to live: events and leases pile up regardless.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await catalog.prune_events(event_retention)
            swept = await catalog.sweep()
            forgotten = await leases.forget()
        except Exception as error:  # a failed sweep is retried at the next interval
            # Never the error's text: a database error's holds the SQL and its parameters.
            metrics.SWEEPS.labels("failed").inc()
            what = describe_error(error) if isinstance(error, SQLAlchemyError) else None
            logger.warning("sweeping expired threads failed: %s", what or type(error).__name__)
            continue
        metrics.SWEEPS.labels("ok").inc()
        metrics.THREADS_SWEPT.inc(swept)
        if swept:
            logger.info("applied the time to live of %d threads", swept)
        if forgotten:
            logger.info("forgot %d leases of threads that no longer exist", forgotten)


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight calls and exits."""
    # Handlers first: a SIGTERM that arrives while the server starts still drains cleanly.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = await start(settings)
    runtime.settle_after_start()
    await stopping.wait()
    logger.info("draining for up to %.0f s", settings.grace_seconds)
    await running.stop(settings.grace_seconds)
    logger.info("stopped")
