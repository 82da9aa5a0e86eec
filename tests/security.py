"""Helpers of the security tests: auth files, authenticated stubs, store snapshots."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql


def new_token() -> str:
    return secrets.token_urlsafe(24)


def write_auth_file(
    path: Path,
    tokens: Mapping[str, tuple[str, Mapping[str, str]]],
    certificates: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
) -> Path:
    """Writes a policy file: name -> (token, grants), name -> (subject, grants)."""
    lines: list[str] = []
    for name, (token, grants) in tokens.items():
        lines += [f"[tokens.{name}]", f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"']
        lines.append("grants = { " + ", ".join(f'"{k}" = "{v}"' for k, v in grants.items()) + " }")
    for name, (subject, grants) in (certificates or {}).items():
        lines += [f"[certificates.{name}]", f'subject = "{subject}"']
        lines.append("grants = { " + ", ".join(f'"{k}" = "{v}"' for k, v in grants.items()) + " }")
    # Written aside and renamed, as an operator's tooling should: a reader never sees half.
    staging = path.with_suffix(".tmp")
    staging.write_text("\n".join(lines) + "\n")
    staging.replace(path)
    return path


Metadata = tuple[tuple[str, str | bytes], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def snapshot(database_url: str) -> dict[str, list[str]]:
    """Every row of every table of the service's database, for before/after comparisons."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            ]
            return {
                table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"')))
                for table in tables
            }
    with psycopg.connect(database_url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        return {
            table: sorted(
                map(repr, conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))))
            )
            for table in tables
        }
