"""Identities, roles and the check every endpoint makes before it touches storage."""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WILDCARD = "*"
"""The namespace key of a grant that covers every namespace."""


class Role(enum.IntEnum):
    """What an identity may do in a namespace; each role includes the ones below it."""

    READ = 1
    """Get, list, history, search, count, watch: what a dashboard needs."""
    WRITE = 2
    """Also puts, writes, create, update and copy within the namespace."""
    ADMIN = 3
    """Also delete, prune and delete for runs."""

    @property
    def label(self) -> str:
        """The role as the policy file spells it: ``read``, ``write`` or ``admin``."""
        return self.name.lower()


class Unauthenticated(Exception):
    """The caller presented no credentials, or none this server knows."""


class PermissionDenied(Exception):
    """The identity lacks the role an operation needs on a namespace.

    Attributes:
        namespace: The namespace of the request.
        role: The role the operation needs.

    """

    def __init__(self, identity: Identity, namespace: str, role: Role) -> None:
        super().__init__(f"{identity.name} lacks the {role.label} role on namespace {namespace!r}")
        self.namespace = namespace
        self.role = role


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    Attributes:
        name: What logs and errors call it (``token "dashboard"``), never the secret itself.
        grants: Namespace (or ``"*"``) to the role granted there.

    """

    name: str
    grants: Mapping[str, Role]


@dataclass(frozen=True)
class Credentials:
    """What a caller presented, as the transport found it.

    Attributes:
        token: The bearer token, if the caller sent one.
        malformed: The caller sent authorization that is not ``Bearer <token>``.
        certificate_names: The verified client certificate's subject CN, then its SANs.

    """

    token: str | None = None
    malformed: bool = False
    certificate_names: Sequence[str] = ()


def hash_token(token: str) -> str:
    """The SHA-256 of a token, in hexadecimal: what the policy file stores."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Policy:
    """The identities a server knows: tokens by their hash, certificates by subject.

    Attributes:
        tokens: SHA-256 digests of tokens, each with the identity it proves.
        certificates: Certificate subject names (CN or SAN) to identities.

    """

    tokens: Sequence[tuple[bytes, Identity]] = ()
    certificates: Mapping[str, Identity] = field(default_factory=dict)

    def authenticate(self, credentials: Credentials) -> Identity:
        """The identity ``credentials`` prove; a token, when sent, decides alone.

        Raises:
            Unauthenticated: There are no credentials, or none this policy knows.

        """
        if credentials.malformed:
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        if credentials.token is not None:
            digest = hashlib.sha256(credentials.token.encode()).digest()
            found: Identity | None = None
            # Every entry is compared, in constant time, so timing tells nothing of a match.
            for known, identity in self.tokens:
                if hmac.compare_digest(known, digest):
                    found = identity
            if found is None:
                raise Unauthenticated("the bearer token is not valid")
            return found
        for name in credentials.certificate_names:
            if name in self.certificates:
                return self.certificates[name]
        if credentials.certificate_names:
            raise Unauthenticated("no bearer token, and the client certificate is not known")
        raise Unauthenticated("a bearer token or a client certificate is required")


def authorize(identity: Identity, namespace: str, role: Role) -> None:
    """Checks that ``identity`` holds ``role`` (or a higher one) on ``namespace``.

    Raises:
        PermissionDenied: It does not; the error names the namespace and the role.

    """
    granted = [identity.grants[key] for key in (namespace, WILDCARD) if key in identity.grants]
    if not granted or max(granted) < role:
        raise PermissionDenied(identity, namespace, role)
