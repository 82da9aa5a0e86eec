"""``checkpoint-server health``: ask a running server's health service, over TLS if need be.

A container probe on a loaded host: this imports gRPC and the health stubs, nothing of the
server. The flags default to the environment variables ``GrpcSaver`` reads too.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

TOKEN_ENV = "LGCHECKPOINT_TOKEN"  # noqa: S105 (the name of a variable)
CA_FILE_ENV = "LGCHECKPOINT_CA_FILE"
CERT_FILE_ENV = "LGCHECKPOINT_CERT_FILE"
KEY_FILE_ENV = "LGCHECKPOINT_KEY_FILE"
SERVER_NAME_ENV = "LGCHECKPOINT_TLS_SERVER_NAME"
_TIMEOUT = 3.0


def add_arguments(parser: argparse.ArgumentParser, default_address: str) -> None:
    """Adds ``--address``, ``--token`` and the TLS flags to ``parser``."""
    parser.add_argument(
        "--address",
        default=default_address,
        help="host:port, or grpcs://host:port for TLS, of the server "
        "(default: the local end of CHECKPOINT_SERVER_LISTEN)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token, as --token=VALUE when it starts with - (env {TOKEN_ENV}); the "
        "server's health service needs none",
    )
    for flag, env, what in (
        ("--ca-file", CA_FILE_ENV, "PEM CA certificates to verify the server with"),
        ("--cert-file", CERT_FILE_ENV, "PEM client certificate, for mTLS"),
        ("--key-file", KEY_FILE_ENV, "PEM private key of the client certificate"),
    ):
        parser.add_argument(
            flag,
            type=Path,
            default=os.environ.get(env) or None,
            help=f"{what}; with a grpcs:// address (env {env})",
        )
    parser.add_argument(
        "--tls-server-name",
        default=os.environ.get(SERVER_NAME_ENV) or None,
        help="the name the server's certificate must carry, when the address does not "
        f"(env {SERVER_NAME_ENV})",
    )


def run(args: argparse.Namespace) -> int:
    """Checks the server at ``args.address``: 0 if it reports SERVING, else 1."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        channel = _open_channel(args)
    except OSError as error:  # a certificate or key file
        print(f"{error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    with channel:
        try:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=_TIMEOUT)
        except grpc.RpcError as error:
            code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
            print(f"{args.address}: {code}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to ``args.address``: TLS for ``grpcs://host:port``, else plaintext.

    Raises:
        OSError: A certificate or key file cannot be read.
        ValueError: Only one of the client certificate and its key is given.

    """
    address: str = args.address
    if (args.cert_file is None) != (args.key_file is None):
        # gRPC would abort the process on a key without its certificate.
        raise ValueError("--cert-file and --key-file (LGCHECKPOINT_CERT/KEY_FILE) go together")
    if address.startswith("grpcs://"):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(args.ca_file),
            private_key=_read(args.key_file),
            certificate_chain=_read(args.cert_file),
        )
        options = []
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
        channel = grpc.secure_channel(address.removeprefix("grpcs://"), credentials, options)
    else:
        channel = grpc.insecure_channel(address.removeprefix("grpc://"))
    if args.token:
        return grpc.intercept_channel(channel, _Bearer(args.token))
    return channel


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        details = client_call_details
        return continuation(
            _Details(
                details.method,
                details.timeout,
                [*(details.metadata or ()), self._header],
                details.credentials,
                details.wait_for_ready,
                details.compression,
            ),
            request,
        )
