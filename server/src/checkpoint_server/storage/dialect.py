"""What differs between SQLite and PostgreSQL outside the hot writes, declared once.

The hot writes have a module per database (sqlite_writes.py, postgres_writes.py); the read
statements that differ say so in queries.py.
"""

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, cast, exists, func, literal, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import InstrumentedAttribute

from checkpoint_server.storage.models import CheckpointRow


def insert_for(dialect: str) -> Callable[[Any], postgresql.Insert | sqlite.Insert]:
    """The dialect's ``insert``, which has the upsert clauses (``on_conflict_do_...``)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def metadata_matches(
    dialect: str, wanted: dict[str, Any], column: InstrumentedAttribute[Any] | None = None
) -> ColumnElement[bool]:
    """A condition true where the metadata has each key of ``wanted`` with exactly its value.

    ``column`` is a JSON column, the checkpoints' metadata by default. Keys and values travel
    as bound parameters: no SQL or JSON path is built from them.
    """
    if not wanted:
        return true()
    if column is None:
        column = CheckpointRow.metadata_
    if dialect == "postgresql":
        # Containment lets PostgreSQL use the GIN index, and is exact for a scalar value. For a
        # list or an object it is not (a longer list contains a shorter one): those keys also
        # get an equality. Only those: the equality makes the planner expect few rows, which
        # for a common value would cost an ordered scan.
        conditions = [cast(column, JSONB).contains(wanted)]
        conditions += [
            cast(column, JSONB)[key] == cast(literal(json.dumps(value)), JSONB)
            for key, value in wanted.items()
            if isinstance(value, list | dict)
        ]
        return and_(*conditions)
    return and_(*(_sqlite_has(column, key, value) for key, value in wanted.items()))


def _sqlite_has(column: InstrumentedAttribute[Any], key: str, value: Any) -> ColumnElement[bool]:
    entry = func.json_each(column).table_valued("key", "type", "atom", "value").alias("entry")
    if value is None or isinstance(value, bool):
        match = entry.c.type == {None: "null", True: "true", False: "false"}[value]
    elif isinstance(value, int | float):
        match = and_(entry.c.type.in_(["integer", "real"]), entry.c.atom == value)
    elif isinstance(value, str):
        match = and_(entry.c.type == "text", entry.c.atom == value)
    else:
        kind = "array" if isinstance(value, list) else "object"
        match = and_(
            entry.c.type == kind,
            func.json(entry.c.value) == func.json(json.dumps(value, separators=(",", ":"))),
        )
    return exists(select(1).select_from(entry).where(entry.c.key == key, match))
