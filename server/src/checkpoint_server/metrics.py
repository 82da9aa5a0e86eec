"""The server's Prometheus metrics, and the HTTP endpoint that exposes them.

Metrics are recorded whether or not the endpoint is on (an increment costs well under a
microsecond); ``--metrics-listen`` only decides whether anyone can scrape them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool

from checkpoint_server.storage import Database

RPCS = Counter(
    "checkpoint_server_rpcs",
    "Calls handled, by method and final gRPC status code.",
    ["method", "code"],
)
RPC_SECONDS = Histogram(
    "checkpoint_server_rpc_duration_seconds",
    "How long calls took, by method and final gRPC status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_ITEMS = Counter(
    "checkpoint_server_batch_items",
    "Writes that went in a group of two or more (a BatchWrite's items, and calls that waited "
    "for their namespace's running transaction), stored or refused, by how: together in the "
    "group's transaction, or alone after it failed (a refused lease, a deadlock, the "
    "database down) or found their thread expired.",
    ["stored"],
)
GROUPS = Counter(
    "checkpoint_server_write_groups",
    "Transactions that stored a group of two or more writes; items per group is the rate of "
    "checkpoint_server_batch_items_total over this one's.",
)


def record_group(together: int, alone: int) -> None:
    """Counts one group of writes: how many its transaction stored, how many went alone."""
    GROUPS.inc()
    BATCH_ITEMS.labels("together").inc(together)
    BATCH_ITEMS.labels("alone").inc(alone)


WATCHERS = Gauge("checkpoint_server_watchers", "WatchEvents streams open now.")
EVENTS_DELIVERED = Counter(
    "checkpoint_server_events_delivered", "Events sent to watchers over WatchEvents."
)
SWEEPS = Counter(
    "checkpoint_server_sweeps", "Runs of the time-to-live sweeper, by outcome.", ["outcome"]
)
THREADS_SWEPT = Counter(
    "checkpoint_server_threads_swept", "Threads whose time to live the sweeper applied."
)
DATABASE_UP = Gauge(
    "checkpoint_server_database_up", "1 while the last database probe succeeded, else 0."
)


class PoolCollector(Collector):
    """Connections of the database's pools in use and kept, read at each scrape."""

    def __init__(self, database: Database) -> None:
        """Reports the pools of ``database``."""
        self._database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The pools' gauges, by engine (``reader`` or ``writer``)."""
        in_use = GaugeMetricFamily(
            "checkpoint_server_db_connections_in_use",
            "Database connections checked out of the pool.",
            labels=["engine"],
        )
        size = GaugeMetricFamily(
            "checkpoint_server_db_pool_size",
            "Database connections the pool keeps open (beyond it, overflow connections).",
            labels=["engine"],
        )
        for name, engine in (("reader", self._database.reader), ("writer", self._database.writer)):
            pool = engine.pool
            if isinstance(pool, QueuePool):
                in_use.add_metric([name], pool.checkedout())
                size.add_metric([name], pool.size())
        yield in_use
        yield size


class MetricsEndpoint:
    """The ``/metrics`` HTTP server and the pool collector it reports, until ``stop``."""

    def __init__(self, listen: str, database: Database) -> None:
        """Serves ``/metrics`` over HTTP on ``listen`` (``host:port``) from a background thread.

        Raises:
            OSError: ``listen`` cannot be served.

        """
        host, _, port = listen.rpartition(":")
        self._http, self._thread = start_http_server(
            int(port),
            addr=host.strip("[]") or "0.0.0.0",  # noqa: S104
        )
        self._collector = PoolCollector(database)
        REGISTRY.register(self._collector)

    def stop(self) -> None:
        """Closes the port and forgets the database, which is about to be disposed."""
        REGISTRY.unregister(self._collector)
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()
