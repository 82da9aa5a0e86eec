"""Opening the database at start-up: waiting for it when it is not up yet, failing in one line.

In a deployment the server and PostgreSQL often start together, so a database that refuses
connections at first is retried for a bounded time, with one log line per attempt. Everything
else that stops a start (a bad URL, a port in use) becomes a ``StartupError`` whose message is
the whole story, printed by the command line without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from checkpoint_server.config import Settings
from checkpoint_server.storage import Database, open_database
from checkpoint_server.storage.database import async_url

logger = logging.getLogger(__name__)

_FIRST_DELAY = 0.5
_MAX_DELAY = 5.0


class StartupError(Exception):
    """The server cannot start; the message says why, in one line."""


def _first_line(error: BaseException) -> str:
    # The driver's own message (refused, authentication failed, no such database), never the
    # statement or its parameters.
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__


async def open_when_reachable(
    database_url: str, *, pool_size: int, wait_seconds: float
) -> Database:
    """Opens and migrates the database, retrying a PostgreSQL that cannot be reached yet.

    Args:
        database_url: ``sqlite:///path`` or ``postgresql://...``.
        pool_size: Connections kept open, as for ``open_database``.
        wait_seconds: How long to keep retrying a PostgreSQL that cannot be reached.

    Raises:
        StartupError: The URL is not valid, or the database could not be opened in time.

    """
    try:
        url = async_url(database_url)
    except (ArgumentError, ValueError) as error:
        raise StartupError(f"--database-url is not valid: {error}") from None
    shown = make_url(database_url).render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folder = Path(url.database).parent
        if not folder.is_dir():
            raise StartupError(f"cannot open the database {shown}: no folder {folder}")
    deadline = time.monotonic() + wait_seconds
    delay = _FIRST_DELAY
    while True:
        try:
            return await open_database(database_url, pool_size=pool_size)
        except OperationalError as error:
            remaining = deadline - time.monotonic()
            # SQLite failing to open is a path problem that waiting does not fix.
            if url.get_backend_name() == "sqlite" or remaining <= 0:
                raise StartupError(
                    f"cannot open the database {shown}: {_first_line(error)}"
                ) from None
            logger.warning(
                "database %s not reachable yet (%s); retrying for up to %.1f s more",
                shown,
                _first_line(error),
                remaining,
            )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_DELAY)
        except DBAPIError as error:
            raise StartupError(f"cannot open the database {shown}: {_first_line(error)}") from None


def cannot_serve(flag: str, settings: Settings) -> StartupError:
    """The error for an address (``--listen`` or ``--metrics-listen``) that cannot be bound."""
    if flag == "--listen":
        address = settings.listen
        hint = " (to share a port between servers on purpose, pass --reuse-port)"
    else:
        address, hint = str(settings.metrics_listen), ""
    return StartupError(
        f"cannot serve on {flag} {address}: the port is in use or the address is not this "
        f"host's{hint}"
    )


def check_port_free(settings: Settings) -> None:
    """Fails with ``cannot_serve`` when another process serves ``settings.listen`` already.

    gRPC finds this out too, but prints its own multi-line log first; asking the OS the same
    question up front gives the operator one line. With ``--reuse-port`` sharing is the point,
    so nothing is checked.

    Raises:
        StartupError: The port is taken.

    """
    host, _, port = settings.listen.rpartition(":")
    if settings.reuse_port or int(port) == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return  # gRPC reports an unknown host in its own words
    with socket.socket(family, kind, proto) as probe:
        # As gRPC binds: reusing addresses in TIME_WAIT (a restart), not ports in use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            raise cannot_serve("--listen", settings) from None
