"""The one error type of the client, carrying the gRPC status."""

from __future__ import annotations

import grpc


class GrpcSaverError(Exception):
    """The service refused a call.

    Attributes:
        code: The gRPC status code, such as ``grpc.StatusCode.INVALID_ARGUMENT``.
        details: The server's message, naming the field or limit at fault.

    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        """Records the status."""
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def rpc_error(error: grpc.RpcError) -> GrpcSaverError:
    """The error a failed call raises to callers."""
    code = error.code() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    details = error.details() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    return GrpcSaverError(code or grpc.StatusCode.UNKNOWN, details or str(error))


def unavailable(error: grpc.RpcError) -> bool:
    """Whether a call failed because the server could not be reached."""
    code = error.code() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    return code == grpc.StatusCode.UNAVAILABLE
