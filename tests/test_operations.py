"""Operating the server: settings checked at start, one-line failures, ports, logs, metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub

from checkpoint_server.config import Settings
from checkpoint_server.server import start
from langgraph.checkpoint.grpc import GrpcSaver
from tests.conftest import ServerProcess, fresh_sqlite_url
from tests.test_batch import checkpoint as batch_checkpoint
from tests.test_leases import acquire
from tests.test_service import put_chain

_SERVER = [sys.executable, "-m", "checkpoint_server"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_SERVER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _lines(stderr: str) -> list[str]:
    """Log lines of our own (gRPC's C core may add its own ``E1201 ...`` line)."""
    return [line for line in stderr.splitlines() if line and not re.match(r"^[EWI]\d{4} ", line)]


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"checkpoint-server \d+\.\d+\.\d+\n", result.stdout)


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--sweep-interval-seconds", "0"], {}, "--sweep-interval-seconds"),
        (["--event-retention-seconds", "-1"], {}, "--event-retention-seconds"),
        (["--max-message-bytes", "-5"], {}, "--max-message-bytes"),
        (["--listen", "nowhere"], {}, "--listen"),
        ([], {"CHECKPOINT_SERVER_THREAD_TTL_STRATEGY": "bogus"}, "THREAD_TTL_STRATEGY='bogus'"),
        ([], {"CHECKPOINT_SERVER_SWEEP_INTERVAL_SECONDS": "0"}, "SWEEP_INTERVAL_SECONDS='0'"),
        ([], {"CHECKPOINT_SERVER_MAX_MESSAGE_BYTES": "1e3"}, "MAX_MESSAGE_BYTES='1e3'"),
        ([], {"CHECKPOINT_SERVER_EVENT_RETENTION_SECONDS": "nan"}, "RETENTION_SECONDS='nan'"),
        ([], {"CHECKPOINT_SERVER_REUSE_PORT": "sometimes"}, "REUSE_PORT='sometimes'"),
        ([], {"CHECKPOINT_SERVER_INSECURE_NO_AUTH": "maybe"}, "INSECURE_NO_AUTH='maybe'"),
        ([], {"CHECKPOINT_SERVER_LISTEN": "nowhere"}, "CHECKPOINT_SERVER_LISTEN='nowhere'"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    args: list[str], env: dict[str, str], names: str, tmp_path: Path
) -> None:
    result = _run("serve", "--database-url", fresh_sqlite_url(tmp_path), *args, env=env)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert names in result.stderr
    assert "must be" in result.stderr  # and what is allowed
    assert not (tmp_path / "checkpoints.db").exists()  # refused before opening anything


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/x", "--database-url is not valid: unsupported database 'mysql'"),
        ("not a url", "--database-url is not valid"),
        ("sqlite:////no/such/dir/x.db", "sqlite:////no/such/dir/x.db: no folder /no/such/dir"),
    ],
)
def test_a_bad_database_is_one_line(url: str, message: str) -> None:
    result = _run("serve", "--database-url", url, "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert len(_lines(result.stderr)) == 1, result.stderr
    [line] = _lines(result.stderr)
    assert message in json.loads(line)["message"]
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_retried_then_one_line() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/nothing"
    started = time.monotonic()
    result = _run("serve", "--database-url", url, "--database-wait-seconds", "1.5")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    records = [json.loads(line) for line in _lines(result.stderr)]
    assert len(records) >= 2
    assert all("not reachable yet" in r["message"] for r in records[:-1])
    assert "retrying for up to" in records[0]["message"]
    assert records[-1]["level"] == "critical"
    assert "cannot open the database" in records[-1]["message"]
    assert "Connection refused" in records[-1]["message"]
    assert "Traceback" not in result.stderr
    assert elapsed >= 1.5


def test_a_served_port_is_refused_unless_reuse_port(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = ServerProcess.start(fresh_sqlite_url(tmp_path / "a"))
    try:
        second = _run(
            "serve", "--database-url", fresh_sqlite_url(tmp_path / "b"), "--listen", first.target
        )
        assert second.returncode == 1
        [line] = second.stderr.splitlines()  # one line, and the database was not even opened
        assert "cannot serve on --listen" in line
        assert "--reuse-port" in line
    finally:
        assert first.stop() == 0


def test_reuse_port_shares_on_purpose(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = ServerProcess.start(fresh_sqlite_url(tmp_path / "a"), "--reuse-port")
    try:
        second = ServerProcess.start(
            fresh_sqlite_url(tmp_path / "a"), "--reuse-port", port=first.port
        )
        assert second.stop() == 0
    finally:
        assert first.stop() == 0


def test_health_checks_the_listen_address_of_the_environment() -> None:
    result = _run("health", env={"CHECKPOINT_SERVER_LISTEN": "0.0.0.0:none"})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "CHECKPOINT_SERVER_LISTEN='0.0.0.0:none'" in line
    assert "must be host:port" in line


def test_health_imports_no_server_code(server: ServerProcess) -> None:
    # A container probe on a loaded host: the command must not load SQLAlchemy or Alembic.
    code = (
        "import sys\n"
        "from checkpoint_server import cli\n"
        "try:\n"
        f"    cli.main(['health', '--address', '{server.target}'])\n"
        "except SystemExit as exit:\n"
        "    heavy = [m for m in ('sqlalchemy', 'alembic', 'checkpoint_server.server',"
        " 'lgcheckpoint', 'importlib.metadata') if m in sys.modules]\n"
        "    print(exit.code, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout + result.stderr


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    """A server of its own, with metrics on, a fast sweeper and a short default TTL."""
    metrics_port = _free_port()
    running = ServerProcess.start(
        fresh_sqlite_url(tmp_path),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--sweep-interval-seconds",
        "0.2",
        "--thread-ttl-seconds",
        "1",
    )
    yield running, metrics_port
    assert running.stop() == 0


def _request_id(call: Any) -> str:
    """The request ID the server returned in the call's trailing metadata."""
    [value] = [v for k, v in call.trailing_metadata() if k == "x-request-id"]
    assert isinstance(value, str)
    return value


def _access(server: ServerProcess) -> list[dict[str, object]]:
    records = [json.loads(line) for line in server.log if line.startswith("{")]
    return [r for r in records if r["logger"] == "checkpoint_server.access"]


def test_every_call_logs_one_access_line_with_a_request_id(
    observed: tuple[ServerProcess, int],
) -> None:
    server, _ = observed
    marker = "s3cret-payload-marker"
    with grpc.insecure_channel(server.target) as channel:
        stub: Any = CheckpointServiceStub(channel)  # untyped: metadata of our own
        request = api.GetCheckpointRequest(namespace="team-log", thread_id=marker)
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetCheckpoint(request, metadata=[("x-request-id", "req-42"), ("token", marker)])
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert _request_id(missing.value) == "req-42"

        _, call = stub.ListCheckpoints.with_call(
            api.ListCheckpointsRequest(namespace="team-log", thread_id="t")
        )
        generated = _request_id(call)
        assert re.fullmatch(r"[0-9a-f]{32}", generated)

        # A request ID that is not a plain token is replaced, never logged.
        with pytest.raises(grpc.RpcError) as forged:
            stub.GetCheckpoint(request, metadata=[("x-request-id", "a b {forged}")])
        replaced = _request_id(forged.value)
        assert re.fullmatch(r"[0-9a-f]{32}", replaced)

    deadline = time.monotonic() + 5
    while len(_access(server)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = _access(server)
    assert [(r["method"], r["code"], r["request_id"]) for r in lines] == [
        ("GetCheckpoint", "NOT_FOUND", "req-42"),
        ("ListCheckpoints", "OK", generated),
        ("GetCheckpoint", "NOT_FOUND", replaced),
    ]
    assert all(r["namespace"] == "team-log" for r in lines)
    assert all(isinstance(r["duration_ms"], float) for r in lines)
    # Never a payload, an ID the client sent, or a metadata value.
    assert marker not in "".join(server.log)
    assert "forged" not in "".join(server.log)


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_calls_watchers_events_and_sweeps(
    observed: tuple[ServerProcess, int],
) -> None:
    server, port = observed
    before = _scrape(port)
    assert before["checkpoint_server_watchers"] == 0
    assert 'checkpoint_server_db_pool_size{engine="reader"}' in before
    with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace="metrics") as saver:
        put_chain(saver, "swept-soon", 3)
        assert saver.get_tuple({"configurable": {"thread_id": "nope"}}) is None
        watch: Any = saver.threads.watch(from_beginning=True)  # a generator, to close
        first = next(watch)  # the watch stream is open now
        during = _scrape(port)
        watch.close()
    assert first.thread_id == "swept-soon"
    puts = 'checkpoint_server_rpcs_total{code="OK",method="PutCheckpoint"}'
    assert during[puts] == 3
    assert during['checkpoint_server_rpcs_total{code="NOT_FOUND",method="GetCheckpoint"}'] == 1
    histogram = 'checkpoint_server_rpc_duration_seconds_count{code="OK",method="PutCheckpoint"}'
    assert during[histogram] == 3
    assert during["checkpoint_server_watchers"] == 1
    assert during["checkpoint_server_events_delivered_total"] >= 1
    assert during["checkpoint_server_database_up"] == 1

    # The thread's one-second time to live runs out; the 0.2 s sweeper applies it.
    deadline = time.monotonic() + 10
    after = _scrape(port)
    while after["checkpoint_server_threads_swept_total"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        after = _scrape(port)
    assert after["checkpoint_server_threads_swept_total"] == 1
    assert after['checkpoint_server_sweeps_total{outcome="ok"}'] >= 1
    assert after["checkpoint_server_watchers"] == 0


def test_metrics_count_batch_items_stored_together_and_alone(
    observed: tuple[ServerProcess, int],
) -> None:
    """An item that fails the batch's transaction (here a refused lease) sends every item of
    the batch down the slow path, one by one: operators see it in the metrics."""
    server, port = observed
    with grpc.insecure_channel(server.target) as channel:
        stub = CheckpointServiceStub(channel)
        acquire(stub, "batches", "leased")
        together = [batch_checkpoint("a", "c1"), batch_checkpoint("b", "c1")]
        stub.BatchWrite(api.BatchWriteRequest(namespace="batches", items=together))
        refused = [batch_checkpoint("c", "c1"), batch_checkpoint("leased", "c1")]
        stub.BatchWrite(api.BatchWriteRequest(namespace="batches", items=refused))
    samples = _scrape(port)
    assert samples['checkpoint_server_batch_items_total{stored="together"}'] == 2
    assert samples['checkpoint_server_batch_items_total{stored="alone"}'] == 2
    assert samples["checkpoint_server_write_groups_total"] == 2


def test_text_logs_keep_the_ready_line(tmp_path: Path) -> None:
    running = ServerProcess.start(fresh_sqlite_url(tmp_path), "--log-format", "text")
    assert running.stop() == 0
    assert not any(line.startswith("{") for line in running.log)
    assert any(" INFO checkpoint_server.server: serving " in line for line in running.log)


def test_a_log_reader_that_stops_reading_stalls_no_call(tmp_path: Path) -> None:
    """Nobody reads the server's stderr after its ready line: calls are still served, and the
    server still stops at once (the lines it could not write are dropped, not waited for)."""
    process = subprocess.Popen(
        [
            *_SERVER,
            "serve",
            "--database-url",
            fresh_sqlite_url(tmp_path),
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        port = next(m.group(1) for line in process.stderr if (m := re.search(r"port (\d+)", line)))
        request = api.GetCheckpointRequest(namespace="team-stuck", thread_id="t")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = CheckpointServiceStub(channel)
            # About 250 bytes of access log each: many times what a pipe holds (64 KiB).
            for _ in range(1500):
                with pytest.raises(grpc.RpcError) as missing:
                    stub.GetCheckpoint(request, timeout=10)
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        process.terminate()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


async def test_a_stopped_server_closes_its_metrics_endpoint(tmp_path: Path) -> None:
    """In one process, a server started after another has stopped serves the same port."""
    metrics_port = _free_port()
    settings = Settings(
        database_url=fresh_sqlite_url(tmp_path),
        listen="127.0.0.1:0",
        metrics_listen=f"127.0.0.1:{metrics_port}",
    )
    for _ in range(2):
        running = await start(settings)
        samples = await asyncio.to_thread(_scrape, metrics_port)
        assert 'checkpoint_server_db_pool_size{engine="writer"}' in samples
        await running.stop(grace=1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", metrics_port), timeout=1).close()
