"""The server's TLS credentials, from PEM files."""

from pathlib import Path

import grpc

from checkpoint_server.config import ConfigurationError, Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS with ``tls_cert``/``tls_key``, verifying clients against ``tls_client_ca``.

    Returns None when the settings ask for plaintext.

    Raises:
        ConfigurationError: A file is missing, or only part of the TLS settings is given.

    """
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ConfigurationError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigurationError("--tls-cert and --tls-key go together")
    client_ca = _read(settings.tls_client_ca, "--tls-client-ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key, "--tls-key"), _read(settings.tls_cert, "--tls-cert"))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"{flag} {path}: cannot be read ({error.strerror})") from None
