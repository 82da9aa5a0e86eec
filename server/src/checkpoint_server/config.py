"""Server settings, with their documented defaults."""

from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///checkpoints.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_DATABASE_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Settings:
    """How a server runs.

    Attributes:
        database_url: ``sqlite:///path`` (default ``./checkpoints.db``) or
            ``postgresql://user@host:port/db``.
        listen: The address to serve on, ``host:port``.
        max_message_bytes: The largest request or response, in bytes (default 64 MiB).
        grace_seconds: How long in-flight calls may finish after SIGTERM.
        pool_size: Database connections kept open.
        database_wait_seconds: How long start-up retries a PostgreSQL it cannot reach.
        reuse_port: Whether other processes may serve the same port (``SO_REUSEPORT``).
        metrics_listen: ``host:port`` of the Prometheus endpoint, or None for none.
        health_probe_seconds: How often the database is probed for the health status.

    """

    database_url: str = DEFAULT_DATABASE_URL
    listen: str = DEFAULT_LISTEN
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_seconds: float = 10.0
    pool_size: int = 10
    thread_ttl_seconds: int | None = None
    thread_ttl_strategy: str = "delete"
    sweep_interval_seconds: float = 60.0
    event_retention_seconds: float = 7 * 24 * 3600.0
    database_wait_seconds: float = DEFAULT_DATABASE_WAIT_SECONDS
    reuse_port: bool = False
    metrics_listen: str | None = None
    health_probe_seconds: float = 1.0
