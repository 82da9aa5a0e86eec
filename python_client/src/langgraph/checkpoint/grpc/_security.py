"""Credentials of a saver's channels: a bearer token and TLS settings, also from the env."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc

TOKEN_ENV = "LGCHECKPOINT_TOKEN"  # noqa: S105 (the name of a variable)
CA_FILE_ENV = "LGCHECKPOINT_CA_FILE"
CERT_FILE_ENV = "LGCHECKPOINT_CERT_FILE"
KEY_FILE_ENV = "LGCHECKPOINT_KEY_FILE"
SERVER_NAME_ENV = "LGCHECKPOINT_TLS_SERVER_NAME"


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings of a ``grpcs://`` target.

    Attributes:
        root_certificates: PEM CA certificates to verify the server with; None means the
            system's roots.
        certificate_chain: PEM client certificate, for a server that requires mTLS.
        private_key: PEM private key of ``certificate_chain``.
        server_name: The name the server's certificate must carry, when the target's host
            is not it (an IP address, say); None means the target's host.

    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        """Refuses half a client certificate, which gRPC would abort the process on."""
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate and its private key go together")

    @classmethod
    def from_files(
        cls,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
    ) -> TlsConfig:
        """TLS settings read from PEM files; each may be omitted."""
        return cls(_read(ca_file), _read(cert_file), _read(key_file), server_name)

    @classmethod
    def from_env(cls) -> TlsConfig:
        """``from_files`` with the files the environment names; unset means omitted.

        The variables are ``LGCHECKPOINT_CA_FILE``, ``LGCHECKPOINT_CERT_FILE``,
        ``LGCHECKPOINT_KEY_FILE`` and ``LGCHECKPOINT_TLS_SERVER_NAME``.
        """
        return cls.from_files(
            ca_file=os.environ.get(CA_FILE_ENV) or None,
            cert_file=os.environ.get(CERT_FILE_ENV) or None,
            key_file=os.environ.get(KEY_FILE_ENV) or None,
            server_name=os.environ.get(SERVER_NAME_ENV) or None,
        )


def _read(path: str | os.PathLike[str] | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


@dataclass(frozen=True)
class Security:
    """What a saver's channels present: TLS (for ``grpcs://``) and a bearer token."""

    tls: TlsConfig | None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, secure: bool, token: str | None, tls: TlsConfig | None) -> Security:
        """The settings given, else those of the environment.

        Raises:
            ValueError: ``tls`` was given for a plaintext target.

        """
        if tls is not None and not secure:
            raise ValueError("tls settings need a grpcs:// target")
        if secure and tls is None:
            tls = TlsConfig.from_env()
        return cls(tls if secure else None, token or os.environ.get(TOKEN_ENV) or None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The TLS credentials of a secure channel."""
        tls = self.tls or TlsConfig()
        return grpc.ssl_channel_credentials(
            tls.root_certificates, tls.private_key, tls.certificate_chain
        )

    def options(self) -> list[tuple[str, Any]]:
        """Channel options these settings add."""
        if self.tls is not None and self.tls.server_name:
            return [("grpc.ssl_target_name_override", self.tls.server_name)]
        return []

    def metadata(self) -> tuple[str, str] | None:
        """The ``authorization`` header every call carries, if there is a token."""
        return ("authorization", f"Bearer {self.token}") if self.token else None


class _Details(NamedTuple):
    method: Any
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def _with_header(details: Any, header: tuple[str, str]) -> _Details:
    return _Details(
        details.method,
        details.timeout,
        [*(details.metadata or ()), header],
        details.credentials,
        details.wait_for_ready,
        details.compression,
    )


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the ``authorization`` header to every call of a blocking channel."""

    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Calls on with the header added."""
        return continuation(_with_header(client_call_details, self._header), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Calls on with the header added."""
        return continuation(_with_header(client_call_details, self._header), request)


def async_bearer_interceptors(header: tuple[str, str]) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding the ``authorization`` header to every call of an asyncio channel.

    One per kind of call: an asyncio channel files an interceptor under its first kind only.
    """
    return [_AsyncUnaryBearer(header), _AsyncStreamBearer(header)]


def _async_details(details: Any, header: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*(details.metadata or ()), header),
        details.credentials,
        details.wait_for_ready,
    )


class _AsyncUnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_async_details(client_call_details, self._header), request)


class _AsyncStreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_async_details(client_call_details, self._header), request)
