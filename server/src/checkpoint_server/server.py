"""Building the gRPC server, and running it until SIGTERM."""

from __future__ import annotations

import asyncio
import functools
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

from checkpoint_server import metrics
from checkpoint_server.api.observe import observe
from checkpoint_server.api.readiness import follow_database
from checkpoint_server.api.servicer import CheckpointServicer
from checkpoint_server.api.thread_servicer import ThreadServicer
from checkpoint_server.api.wire import parse
from checkpoint_server.config import Settings
from checkpoint_server.startup import cannot_serve, check_port_free, open_when_reachable
from checkpoint_server.storage import (
    CheckpointStore,
    Database,
    EventLog,
    ThreadCatalog,
    TtlPolicy,
    listen,
)

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

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish, then closes the database."""
        await self.health.enter_graceful_shutdown()
        self.events.close()  # watch streams end; other calls get the grace to finish
        await self.server.stop(grace)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.database.dispose()


def _handlers(service: Any, module: Any, servicer: Any) -> grpc.GenericRpcHandler:
    """A service's handlers, parsing requests so that bad bytes reach the servicer."""
    handlers = {}
    for method in service.methods:
        request_type: type[Message] = getattr(module, method.input_type.name)
        response_type: type[Message] = getattr(module, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        behavior = getattr(servicer, method.name)
        behavior = observe(method.name, behavior, server_streaming=method.server_streaming)
        handlers[method.name] = make(
            behavior,
            request_deserializer=functools.partial(parse, request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


async def start(settings: Settings) -> RunningServer:
    """Opens the database (migrating it) and starts serving."""
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
        ]
    )
    ttl = TtlPolicy(settings.thread_ttl_seconds, settings.thread_ttl_strategy)
    servicer = CheckpointServicer(
        CheckpointStore(database, ttl), max_message_bytes=settings.max_message_bytes
    )
    catalog = ThreadCatalog(database, ttl)
    event_log = EventLog(database, settings.event_retention_seconds)
    server.add_generic_rpc_handlers(
        [
            _handlers(_SERVICE, api, servicer),
            _handlers(
                _THREADS,
                thread_api,
                ThreadServicer(catalog, event_log),
            ),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (_SERVICE.full_name, _THREADS.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = server.add_insecure_port(settings.listen)
        if settings.metrics_listen is not None:
            metrics.serve_metrics(settings.metrics_listen, database)
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
            _sweep(catalog, settings.sweep_interval_seconds, settings.event_retention_seconds)
        )
    ]
    tasks.append(
        asyncio.create_task(
            follow_database(database, health_servicer, names, settings.health_probe_seconds)
        )
    )
    if not database.is_sqlite:
        tasks.append(asyncio.create_task(listen(database.url, database.hub)))
    logger.info("serving %s on port %d", _SERVICE.full_name, port)
    return RunningServer(server, database, health_servicer, port, tasks, event_log)


async def _sweep(catalog: ThreadCatalog, interval: float, event_retention: float) -> None:
    """Applies expired threads' time to live and drops old events, every ``interval`` s."""
    while True:
        await asyncio.sleep(interval)
        try:
            await catalog.prune_events(event_retention)
            swept = await catalog.sweep()
        except Exception as error:  # a failed sweep is retried at the next interval
            # The class only: a database error's text holds the SQL and its parameters.
            metrics.SWEEPS.labels("failed").inc()
            logger.error("sweeping expired threads failed: %s", type(error).__name__)
            continue
        metrics.SWEEPS.labels("ok").inc()
        metrics.THREADS_SWEPT.inc(swept)
        if swept:
            logger.info("applied the time to live of %d threads", swept)


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight calls and exits."""
    # Handlers first: a SIGTERM that arrives while the server starts still drains cleanly.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = await start(settings)
    await stopping.wait()
    logger.info("draining for up to %.0f s", settings.grace_seconds)
    await running.stop(settings.grace_seconds)
    logger.info("stopped")
