"""The health status follows the database: NOT_SERVING while it cannot be reached.

A load balancer or orchestrator then routes around a server whose calls could only fail, and
back to it by itself once the database answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2

from checkpoint_server import metrics
from checkpoint_server.storage import Database

logger = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def follow_database(
    database: Database,
    servicer: health.aio.HealthServicer,
    services: Sequence[str],
    interval: float,
) -> None:
    """Probes the database every ``interval`` s and sets ``services``' status to match, forever.

    The server starts SERVING (it just opened the database); after graceful shutdown began,
    the health servicer ignores these updates, so a stopping server stays NOT_SERVING.
    """
    serving = True
    metrics.DATABASE_UP.set(1)
    while True:
        await asyncio.sleep(interval)
        try:
            # A database that hangs instead of refusing is as unreachable as a refusing one.
            async with asyncio.timeout(max(interval, 1.0)):
                up = await database.ping()
        except TimeoutError:
            up = False
        metrics.DATABASE_UP.set(1 if up else 0)
        if up == serving:
            continue
        serving = up
        if up:
            logger.info("the database answers again: health is SERVING")
        else:
            logger.warning("the database cannot be reached: health is NOT_SERVING")
        for name in services:
            await servicer.set(name, _SERVING if up else _NOT_SERVING)
