"""Server settings, with their documented defaults."""

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///checkpoints.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT = 128 * 1024 * 1024
DEFAULT_DATABASE_WAIT_SECONDS = 30.0
DEFAULT_MAX_WATCHERS = 1000
DEFAULT_MAX_WATCHERS_PER_NAMESPACE = 100
DEFAULT_KEEPALIVE_SECONDS = 60.0
DEFAULT_MAX_GROUP_WRITES = 64


class ConfigurationError(Exception):
    """Settings the server cannot start with; the message says which and why, in one line."""


@dataclass(frozen=True)
class Settings:
    """How a server runs.

    Attributes:
        database_url: ``sqlite:///path`` (default ``./checkpoints.db``) or
            ``postgresql://user@host:port/db``.
        listen: The address to serve on, ``host:port``.
        max_message_bytes: The largest request or response, in bytes (default 64 MiB).
        max_request_bytes_in_flight: The request bytes all calls together may hold (default
            128 MiB); a request past it is refused with RESOURCE_EXHAUSTED.
        max_watchers: The WatchEvents streams the server keeps open at once (default 1,000);
            one more is refused with RESOURCE_EXHAUSTED.
        max_watchers_per_namespace: The WatchEvents streams one namespace keeps open at once
            (default 100), so that one tenant cannot take every slot.
        keepalive_seconds: How often the server pings each connection, and how long it waits
            for the answer before dropping the connection and freeing its watcher slots.
        grace_seconds: How long in-flight calls may finish after SIGTERM.
        pool_size: Database connections kept open.
        max_group_writes: The writes of one namespace that may share a transaction (default
            64); 1 gives every write call a transaction of its own.
        auth_file: The policy file (tokens, certificates, grants); None means auth off.
        insecure_no_auth: Serve a non-loopback address with auth off anyway.
        tls_cert: The server's PEM certificate chain; with ``tls_key``, serve TLS.
        tls_key: The server's PEM private key.
        tls_client_ca: PEM CA certificates that client certificates must chain to (mTLS).
        reflection: Serve gRPC reflection (the schema only, no data).
        database_wait_seconds: How long start-up retries a PostgreSQL it cannot reach.
        reuse_port: Whether other processes may serve the same port (``SO_REUSEPORT``).
        metrics_listen: ``host:port`` of the Prometheus endpoint, or None for none.
        health_probe_seconds: How often the database is probed for the health status.

    """

    database_url: str = DEFAULT_DATABASE_URL
    listen: str = DEFAULT_LISTEN
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_request_bytes_in_flight: int = DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT
    max_watchers: int = DEFAULT_MAX_WATCHERS
    max_watchers_per_namespace: int = DEFAULT_MAX_WATCHERS_PER_NAMESPACE
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    grace_seconds: float = 10.0
    pool_size: int = 10
    max_group_writes: int = DEFAULT_MAX_GROUP_WRITES
    thread_ttl_seconds: int | None = None
    thread_ttl_strategy: str = "delete"
    sweep_interval_seconds: float = 60.0
    event_retention_seconds: float = 7 * 24 * 3600.0
    auth_file: Path | None = None
    insecure_no_auth: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    reflection: bool = True
    database_wait_seconds: float = DEFAULT_DATABASE_WAIT_SECONDS
    reuse_port: bool = False
    metrics_listen: str | None = None
    health_probe_seconds: float = 1.0
