"""Building the gRPC server, and running it until SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

from checkpoint_server.api.servicer import CheckpointServicer
from checkpoint_server.api.wire import parse
from checkpoint_server.config import Settings
from checkpoint_server.storage import CheckpointStore, Database, open_database

logger = logging.getLogger(__name__)

_SERVICE = api.DESCRIPTOR.services_by_name["CheckpointService"]


@dataclass
class RunningServer:
    """A started server and what it owns."""

    server: grpc.aio.Server
    database: Database
    health: health.aio.HealthServicer
    port: int

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish, then closes the database."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.database.dispose()


def _handlers(servicer: CheckpointServicer) -> grpc.GenericRpcHandler:
    """The service's handlers, parsing requests so that bad bytes reach the servicer."""
    handlers = {}
    for method in _SERVICE.methods:
        request_type: type[Message] = getattr(api, method.input_type.name)
        response_type: type[Message] = getattr(api, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=functools.partial(parse, request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers)


async def start(settings: Settings) -> RunningServer:
    """Opens the database (migrating it) and starts serving."""
    database = await open_database(settings.database_url, pool_size=settings.pool_size)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
    )
    servicer = CheckpointServicer(
        CheckpointStore(database), max_message_bytes=settings.max_message_bytes
    )
    server.add_generic_rpc_handlers([_handlers(servicer)])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (_SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(settings.listen)
    except RuntimeError:
        await database.dispose()
        raise
    await server.start()
    for name in ("", _SERVICE.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("serving %s on port %d", _SERVICE.full_name, port)
    return RunningServer(server, database, health_servicer, port)


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
