"""Refusing to serve a network without authentication unless the operator insists."""

import ipaddress
import logging

from checkpoint_server.config import ConfigurationError

logger = logging.getLogger(__name__)


def is_loopback(listen: str) -> bool:
    """Whether ``listen`` (``host:port`` or ``unix:path``) is reachable from this host only."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(listen: str, *, auth: bool, tls: bool, insecure_no_auth: bool) -> None:
    """Refuses a non-loopback ``listen`` with auth off unless ``insecure_no_auth``.

    Warns when tokens would cross a network in the clear.

    Raises:
        ConfigurationError: In one line, saying how to go on.

    """
    if is_loopback(listen):
        return
    if auth and not tls:
        logger.warning(
            "bearer tokens reach %s in plaintext: serve TLS (--tls-cert, --tls-key) or "
            "terminate TLS in front of the server",
            listen,
        )
    if auth or insecure_no_auth:
        return
    raise ConfigurationError(
        f"refusing to serve {listen} without authentication: pass --auth-file PATH "
        "(see the README's Security), or --insecure-no-auth to let anyone who can reach "
        "the port in"
    )
