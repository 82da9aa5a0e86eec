"""Authenticating and authorizing each gRPC call before its handler touches storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor

from checkpoint_server.api.converters import DEFAULT_NAMESPACE
from checkpoint_server.api.wire import MalformedRequest
from checkpoint_server.auth import (
    Credentials,
    PermissionDenied,
    Policy,
    PolicySource,
    Role,
    Unauthenticated,
    authorize,
    required_role,
)

Context = grpc.aio.ServicerContext[Any, Any]
Behaviour = Callable[[Any, Context], Any]

_BEARER = "bearer "


class Gate:
    """Puts the policy of a ``PolicySource`` in front of handlers; no source lets all in."""

    def __init__(self, source: PolicySource | None) -> None:
        """Guards with ``source``'s current policy, or not at all when it is None."""
        self._source = source

    def guard(self, method: MethodDescriptor, behaviour: Behaviour) -> Behaviour:
        """``behaviour`` (a handler of ``method``), run only for callers the policy admits.

        Raises:
            LookupError: ``method`` has no required role, even with auth off, so that a new
                RPC cannot ship without one.

        """
        role = required_role(method.full_name)
        source = self._source
        if source is None:
            return behaviour
        if method.server_streaming:

            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                credentials = _credentials(context)
                policy = source.policy
                await _admit(policy, credentials, request, context, role)
                async for item in behaviour(request, context):
                    # A reload may have revoked the caller: a stream outlives its first check.
                    if source.policy is not policy:
                        policy = source.policy
                        await _admit(policy, credentials, request, context, role)
                    yield item

            return stream

        async def unary(request: Any, context: Context) -> Any:
            await _admit(source.policy, _credentials(context), request, context, role)
            return await behaviour(request, context)

        return unary


async def _admit(
    policy: Policy, credentials: Credentials, request: Any, context: Context, role: Role
) -> None:
    try:
        identity = policy.authenticate(credentials)
        # A malformed request names no namespace; its handler refuses it before any storage.
        if not isinstance(request, MalformedRequest):
            authorize(identity, request.namespace or DEFAULT_NAMESPACE, role)
    except Unauthenticated as error:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
    except PermissionDenied as error:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))


def _credentials(context: Context) -> Credentials:
    """The bearer token and the verified client certificate's names of a call."""
    values = [
        value
        for key, value in context.invocation_metadata() or ()
        if key == "authorization" and isinstance(value, str)
    ]
    token: str | None = None
    malformed = len(values) > 1
    if len(values) == 1:
        value = values[0]
        if value[: len(_BEARER)].lower() == _BEARER and value[len(_BEARER) :].strip():
            token = value[len(_BEARER) :].strip()
        else:
            malformed = True
    peer = context.auth_context()
    names = [
        raw.decode("utf-8", "replace")
        for key in ("x509_common_name", "x509_subject_alternative_name")
        for raw in peer.get(key, ())
    ]
    return Credentials(token=token, malformed=malformed, certificate_names=names)
