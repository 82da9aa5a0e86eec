"""Who may call the service, on which namespaces, with which role.

Independent of gRPC: the gRPC API (``checkpoint_server.api.auth``) and any later endpoint
authenticate a caller's ``Credentials`` against the current ``Policy`` and ``authorize`` the
namespace of each request against the role its operation needs (``REQUIRED_ROLES``).
"""

from checkpoint_server.auth.operations import REQUIRED_ROLES, required_role
from checkpoint_server.auth.policy import (
    WILDCARD,
    Credentials,
    Identity,
    PermissionDenied,
    Policy,
    Role,
    Unauthenticated,
    authorize,
    hash_token,
)
from checkpoint_server.auth.policy_file import PolicyFileError, load_policy
from checkpoint_server.auth.source import PolicySource

__all__ = [
    "REQUIRED_ROLES",
    "WILDCARD",
    "Credentials",
    "Identity",
    "PermissionDenied",
    "Policy",
    "PolicyFileError",
    "PolicySource",
    "Role",
    "Unauthenticated",
    "authorize",
    "hash_token",
    "load_policy",
    "required_role",
]
