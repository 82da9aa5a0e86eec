"""The server's log shows no SQL, no bound parameters and no traceback for what clients do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from lgcheckpoint.v1 import thread_pb2 as thread_pb
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from tests.conftest import ServerProcess

_RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
_LEAKS = re.compile(r"\[SQL:|\[parameters:|SELECT |Traceback|secret-value")


class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own, on a free port, run as the postgres user."""

    def __init__(self) -> None:
        pg_config = shutil.which("pg_config")
        assert pg_config is not None
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self._bin = Path(bindir)
        self.dir = Path(tempfile.mkdtemp(prefix="lgcp-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._as_postgres(
            str(self._bin / "initdb"), "-A", "trust", "-U", "postgres", "-D", self._data
        )
        self.start()

    @property
    def _data(self) -> str:
        return str(self.dir / "data")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            [_RUNUSER, "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    def _ctl(self, *args: str) -> None:
        self._as_postgres(str(self._bin / "pg_ctl"), "-D", self._data, "-w", *args)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._ctl("-o", options, "-l", str(self.dir / "log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def throwaway_postgres(postgres_url: str) -> Iterator[ThrowawayPostgres]:
    if os.geteuid() != 0:
        pytest.skip("starting a PostgreSQL of the test's own needs root (to run as postgres)")
    cluster = ThrowawayPostgres()
    try:
        yield cluster
    finally:
        cluster.remove()


def test_a_database_outage_is_logged_without_sql_or_parameters(
    throwaway_postgres: ThrowawayPostgres,
) -> None:
    server = ServerProcess.start(throwaway_postgres.url, "--sweep-interval-seconds", "0.1")
    try:
        with grpc.insecure_channel(server.target) as channel:
            threads = ThreadServiceStub(channel)
            ttl = thread_pb.ThreadTtl(
                ttl=Duration(seconds=3600), strategy=thread_pb.TTL_STRATEGY_DELETE
            )
            threads.CreateThread(
                thread_api.CreateThreadRequest(
                    thread_id="secret-value", metadata_json=b'{"k": "secret-value"}', ttl=ttl
                )
            )
            throwaway_postgres.stop()
            time.sleep(1.5)  # sweeps and calls fail on the pooled connections meanwhile
            with pytest.raises(grpc.RpcError):
                threads.GetThread(thread_api.GetThreadRequest(thread_id="secret-value"))
            throwaway_postgres.start()
            deadline = time.monotonic() + 20
            while True:  # the server recovers by itself
                try:
                    threads.GetThread(
                        thread_api.GetThreadRequest(thread_id="secret-value"), timeout=5
                    )
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline
                    time.sleep(0.3)
    finally:
        assert server.stop() == 0
    log = "".join(server.log)
    assert "sweeping expired threads failed" in log
    assert _LEAKS.search(log) is None, log


def test_cancelled_watches_log_no_error(server: ServerProcess, namespace: str) -> None:
    with grpc.insecure_channel(server.target) as channel:
        threads = ThreadServiceStub(channel)
        for index in range(200):
            threads.CreateThread(
                thread_api.CreateThreadRequest(namespace=namespace, thread_id=f"t{index}")
            )
        start = len(server.log)
        for _ in range(3):
            # Cancelled after an event, while idle, and by a deadline mid-history.
            call = threads.WatchEvents(
                thread_api.WatchEventsRequest(namespace=namespace, from_beginning=True)
            )
            next(call)
            call.cancel()
            idle = threads.WatchEvents(thread_api.WatchEventsRequest(namespace=namespace))
            time.sleep(0.2)
            idle.cancel()
            with pytest.raises(grpc.RpcError):
                for _ in threads.WatchEvents(
                    thread_api.WatchEventsRequest(namespace=namespace, from_beginning=True),
                    timeout=0.005,
                ):
                    pass

    async def cancel_async() -> None:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = ThreadServiceStub(channel)
            call = stub.WatchEvents(
                thread_api.WatchEventsRequest(namespace=namespace, from_beginning=True)
            )
            await call.read()
            await asyncio.sleep(0.3)  # the server blocks on flow control meanwhile
            call.cancel()

    asyncio.run(cancel_async())
    time.sleep(0.5)
    logged = "".join(server.log[start:])
    assert " ERROR " not in logged
    assert "Traceback" not in logged
