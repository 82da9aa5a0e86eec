"""Page tokens and watch cursors, sealed with the server's key and bound to one namespace.

A token's content (a database-wide thread key, an event number, a transaction ID) would let a
tenant count another tenant's activity, so clients get it encrypted and authenticated with
AES-SIV (RFC 5297). SIV is deterministic: the same position always gives the same token, so
clients may compare cursors, and equal tokens reveal only what the client already knows. The
kind of token and the namespace are the associated data: a token used for another namespace or
as another kind fails to open, like a forged or altered one, and every failure is the same
``InvalidArgument``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from checkpoint_server.errors import InvalidArgument

LIST_CHECKPOINTS = "list-checkpoints"
SEARCH_THREADS = "search-threads"
WATCH_CURSOR = "watch-cursor"

# Far above what the server issues: a longer token is refused before any work on it.
_MAX_TOKEN = 4096
INT64 = 2**63


class Sealer:
    """Seals and opens the server's tokens with one key."""

    def __init__(self, key: bytes) -> None:
        """Uses ``key``, 32, 48 or 64 bytes that every server of the database shares."""
        self._aead = AESSIV(key)

    def seal(self, kind: str, namespace: str, content: list[Any]) -> str:
        """The token carrying ``content`` (JSON values) for ``kind`` in ``namespace``."""
        plain = json.dumps(content, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(plain, _associated(kind, namespace))
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, kind: str, namespace: str, token: str, field: str) -> list[Any]:
        """The content of a token this server sealed for ``kind`` in ``namespace``.

        Raises:
            InvalidArgument: Naming ``field``, for any token the server did not issue so.

        """
        refused = InvalidArgument(field, "is not a token this server issued for this namespace")
        if len(token) > _MAX_TOKEN:
            raise refused
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            plain = self._aead.decrypt(sealed, _associated(kind, namespace))
        except (ValueError, binascii.Error, InvalidTag):
            raise refused from None
        content = json.loads(plain)
        if not isinstance(content, list):
            raise refused
        return content


def _associated(kind: str, namespace: str) -> list[bytes]:
    return [kind.encode(), namespace.encode()]


def int64(value: Any) -> bool:
    """Whether a token's field is an integer a database column can hold."""
    return type(value) is int and -INT64 <= value < INT64
