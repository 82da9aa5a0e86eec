"""Which statements postgres_driver.fetch runs past SQLAlchemy: those needing no conversion."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Integer, String, TypeDecorator, bindparam, literal, select
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from checkpoint_server.storage import postgres_driver, queries
from checkpoint_server.storage.records import TtlPolicy

DIALECT = psycopg_dialect()  # type: ignore[no-untyped-call]


class Upper(TypeDecorator[str]):
    impl = String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else str(value).upper()


def test_the_gets_compile_to_text_the_driver_runs_with_their_parameters() -> None:
    for statement in (queries.get_latest("postgresql"), queries.get_by_id("postgresql")):
        compiled = postgres_driver._compile(DIALECT, statement)
        params = compiled.construct_params(
            {"namespace": "n", "thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "c"}
            | queries.visibility(TtlPolicy())
        )
        assert "POSTCOMPILE" not in compiled.string
        assert params is not None
        assert {"namespace", "thread_id", "checkpoint_ns"} <= set(params)


@pytest.mark.parametrize(
    "statement",
    [
        select(literal(1)).where(literal(1).in_(bindparam("ids", expanding=True))),  # expands
        select(literal(1)).limit(bindparam("n", literal_execute=True)),  # rendered in the text
        select(bindparam("x", type_=Upper())),  # converted on the way out
    ],
    ids=["expanding", "literal_execute", "result_processor"],
)
def test_statements_that_need_sqlalchemy_to_convert_values_are_refused(statement: Any) -> None:
    with pytest.raises(TypeError, match="need no conversion"):
        postgres_driver._compile(DIALECT, statement)


def test_a_statement_is_compiled_once() -> None:
    statement = select(literal(1, Integer()))
    assert postgres_driver._compile(DIALECT, statement) is postgres_driver._compile(
        DIALECT, statement
    )
