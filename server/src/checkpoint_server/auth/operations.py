"""The role each operation of the service needs, by its full RPC name."""

from collections.abc import Mapping

from checkpoint_server.auth.policy import Role

_CHECKPOINTS = "lgcheckpoint.v1.CheckpointService."
_THREADS = "lgcheckpoint.v1.ThreadService."

REQUIRED_ROLES: Mapping[str, Role] = {
    _CHECKPOINTS + "GetCheckpoint": Role.READ,
    _CHECKPOINTS + "BatchGetCheckpoints": Role.READ,
    _CHECKPOINTS + "ListCheckpoints": Role.READ,
    _CHECKPOINTS + "GetDeltaChannelHistory": Role.READ,
    _CHECKPOINTS + "PutCheckpoint": Role.WRITE,
    _CHECKPOINTS + "PutWrites": Role.WRITE,
    # Every item is in the request's one namespace (api/converters.py checks).
    _CHECKPOINTS + "BatchWrite": Role.WRITE,
    # Both threads of a copy are in the request's one namespace.
    _CHECKPOINTS + "CopyThread": Role.WRITE,
    _CHECKPOINTS + "DeleteThread": Role.ADMIN,
    _CHECKPOINTS + "DeleteForRuns": Role.ADMIN,
    _CHECKPOINTS + "PruneThreads": Role.ADMIN,
    # A lease fences the writes of a thread: taking one is a write.
    _CHECKPOINTS + "AcquireLease": Role.WRITE,
    _CHECKPOINTS + "RenewLease": Role.WRITE,
    _CHECKPOINTS + "ReleaseLease": Role.WRITE,
    _THREADS + "GetThread": Role.READ,
    _THREADS + "SearchThreads": Role.READ,
    _THREADS + "CountThreads": Role.READ,
    _THREADS + "WatchEvents": Role.READ,
    _THREADS + "CreateThread": Role.WRITE,
    _THREADS + "UpdateThread": Role.WRITE,
}
"""Full RPC name (``package.Service.Method``) to the role it needs on the namespace."""


def required_role(operation: str) -> Role:
    """The role ``operation`` needs.

    Raises:
        LookupError: The operation has no role: a new RPC must be given one here, or the
            server refuses to start.

    """
    try:
        return REQUIRED_ROLES[operation]
    except KeyError:
        raise LookupError(f"{operation} has no required role in auth.operations") from None
