"""Real servers for the tests: a server process per database, over a real socket."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_READY = re.compile(r"serving \S+ on port (\d+)")


@dataclass
class ServerProcess:
    """A ``checkpoint-server serve`` child process."""

    database_url: str
    process: subprocess.Popen[str]
    target: str
    log: list[str]
    _pump: threading.Thread = field(init=False)

    @classmethod
    def start(
        cls,
        database_url: str,
        *extra: str,
        port: int = 0,
        on_line: Callable[[str], None] | None = None,
    ) -> ServerProcess:
        """Starts a server and waits until it serves; ``on_line`` sees each line until then."""
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "checkpoint_server",
                "serve",
                "--database-url",
                database_url,
                "--listen",
                f"127.0.0.1:{port}",
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        log: list[str] = []
        for line in process.stderr:
            log.append(line)
            if on_line is not None:
                on_line(line)
            if match := _READY.search(line):
                server = cls(database_url, process, f"127.0.0.1:{match.group(1)}", log)
                server._drain()
                return server
        process.wait()
        process.stderr.close()
        raise RuntimeError("server exited before serving:\n" + "".join(log))

    def _drain(self) -> None:
        # Keep reading the log so a chatty server never blocks on a full pipe.
        def pump() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    @property
    def port(self) -> int:
        """The port served on."""
        return int(self.target.rsplit(":", 1)[1])

    def stop(self) -> int:
        """Sends SIGTERM and waits for a clean exit; returns the exit code."""
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self._pump.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


def _postgres_available() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as error:
        return str(error)


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database, dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards.

    Skips when PostgreSQL cannot be reached, except under ``CI=true``, where it fails.
    """
    problem = _postgres_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {problem}")
        pytest.skip(f"PostgreSQL unavailable: {problem}")
    with postgres_database("lgcp_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file for this test session."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'checkpoints.db'}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database in turn."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[ServerProcess]:
    """A server on each database, shared by the session."""
    running = ServerProcess.start(database_url)
    yield running
    assert running.stop() == 0, "".join(running.log)


@pytest.fixture
def namespace() -> str:
    """A namespace of its own for each test."""
    return f"test-{uuid.uuid4().hex[:8]}"


def fresh_sqlite_url(tmp_path: Path) -> str:
    """A new SQLite file in ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'checkpoints.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own, for tests that start and stop servers."""
    if request.param == "sqlite":
        yield fresh_sqlite_url(tmp_path)
        return
    request.getfixturevalue("postgres_url")  # skips or fails as the session decided
    with postgres_database("lgcp_restart") as url:
        yield url
