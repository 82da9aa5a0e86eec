"""Reading a policy from its TOML file, refusing anything ambiguous."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from checkpoint_server.auth.policy import Identity, Policy, Role
from checkpoint_server.config import ConfigurationError

_ROLES = {role.label: role for role in Role}
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class PolicyFileError(ConfigurationError):
    """The policy file cannot be read or says something invalid; names the entry."""


def load_policy(path: Path) -> Policy:
    """Reads the policy file at ``path``.

    The file holds ``[tokens.NAME]`` tables (``sha256``, ``grants``) and
    ``[certificates.NAME]`` tables (``subject``, ``grants``); see the README's Security.

    Raises:
        PolicyFileError: The file is missing, is not TOML, or holds an invalid entry.

    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyFileError(f"{path}: cannot be read ({type(error).__name__})") from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyFileError(f"{path}: is not valid TOML: {error}") from None
    try:
        return _policy(document)
    except PolicyFileError as error:
        raise PolicyFileError(f"{path}: {error}") from None


def _policy(document: dict[str, Any]) -> Policy:
    unknown = set(document) - {"tokens", "certificates"}
    if unknown:
        raise PolicyFileError(f"{sorted(unknown)[0]}: unknown key (expected tokens, certificates)")
    tokens: list[tuple[bytes, Identity]] = []
    for name, entry in _tables(document, "tokens"):
        digest = _string(entry, f"tokens.{name}.sha256")
        if not _SHA256.fullmatch(digest):
            raise PolicyFileError(
                f"tokens.{name}.sha256: must be 64 hexadecimal characters "
                "(make one with: checkpoint-server hash-token)"
            )
        if any(bytes.fromhex(digest) == known for known, _ in tokens):
            raise PolicyFileError(f"tokens.{name}.sha256: another token has the same hash")
        _only(entry, f"tokens.{name}", {"sha256", "grants"})
        identity = Identity(f"token {name!r}", _grants(entry, f"tokens.{name}"))
        tokens.append((bytes.fromhex(digest), identity))
    certificates: dict[str, Identity] = {}
    for name, entry in _tables(document, "certificates"):
        subject = _string(entry, f"certificates.{name}.subject")
        if subject in certificates:
            raise PolicyFileError(f"certificates.{name}.subject: is named twice")
        _only(entry, f"certificates.{name}", {"subject", "grants"})
        identity = Identity(f"certificate {name!r}", _grants(entry, f"certificates.{name}"))
        certificates[subject] = identity
    return Policy(tuple(tokens), certificates)


def _tables(document: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    section = document.get(key, {})
    if not isinstance(section, dict):
        raise PolicyFileError(f"{key}: must be tables, as [{key}.NAME]")
    for name, entry in section.items():
        if not isinstance(entry, dict):
            raise PolicyFileError(f"{key}.{name}: must be a table, as [{key}.{name}]")
    return list(section.items())


def _string(entry: dict[str, Any], path: str) -> str:
    value = entry.get(path.rsplit(".", 1)[1])
    if not isinstance(value, str) or not value:
        raise PolicyFileError(f"{path}: is required, a non-empty string")
    return value


def _only(entry: dict[str, Any], path: str, allowed: set[str]) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise PolicyFileError(f"{path}.{sorted(unknown)[0]}: unknown key")


def _grants(entry: dict[str, Any], path: str) -> dict[str, Role]:
    grants = entry.get("grants")
    if not isinstance(grants, dict) or not grants:
        raise PolicyFileError(
            f'{path}.grants: is required, a table of namespace = "read" | "write" | "admin"'
        )
    roles: dict[str, Role] = {}
    for namespace, role in grants.items():
        if not namespace or role not in _ROLES:
            raise PolicyFileError(
                f'{path}.grants.{namespace}: must be a non-empty namespace (or "*") '
                'granted "read", "write" or "admin"'
            )
        roles[namespace] = _ROLES[role]
    return roles
