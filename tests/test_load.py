"""A short run of the load test (bench/load.py) against a real server: no call fails."""

from __future__ import annotations

from bench.load import NAMESPACES, WATCHERS_PER_NAMESPACE, run
from tests.conftest import ServerProcess

_RPCS = {
    "CountThreads",
    "CreateThread",
    "GetCheckpoint",
    "GetThread",
    "ListCheckpoints",
    "PutCheckpoint",
    "PutWrites",
    "SearchThreads",
    "UpdateThread",
}


async def test_a_short_load_has_no_failed_call_and_every_watcher_gets_every_event(
    own_database: str,
) -> None:
    server = ServerProcess.start(own_database)
    try:
        report = await run(
            server.target,
            server.process.pid,
            seconds=6,
            clients=8,
            database=own_database.split(":")[0],
        )
    finally:
        assert server.stop() == 0, "".join(server.log)
    print(report.markdown())
    assert report.failures == []
    assert not {code for _, code in report.errors} & {"INTERNAL", "UNKNOWN"}
    assert set(report.latencies) == _RPCS
    assert len(report.watchers) == NAMESPACES * WATCHERS_PER_NAMESPACE
    assert sum(report.checkpoints_put.values()) == report.latencies["PutCheckpoint"].count > 0
    assert all(w.checkpoints == report.checkpoints_put[w.namespace] for w in report.watchers)
    assert "Traceback" not in "".join(server.log)
