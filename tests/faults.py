"""What the fault tests break: a PostgreSQL of their own, and servers they kill."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ServerProcess


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def kill(server: ServerProcess) -> None:
    """SIGKILL: no drain, no clean shutdown, whatever was in flight is cut off."""
    server.process.kill()
    server.process.wait(timeout=30)
    server._pump.join(timeout=5)
    assert server.process.stderr is not None
    server.process.stderr.close()


def _bindir() -> Path | None:
    try:
        pg_config = shutil.which("pg_config") or "pg_config"
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(found)


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own, in a temporary folder, on its own port.

    Never the shared cluster: this one may be stopped and started at will.
    """

    folder: Path
    port: int
    bindir: Path

    @property
    def url(self) -> str:
        """The URL of its ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Starts it and waits until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        data = str(self.folder / "data")
        self._as_postgres("pg_ctl", "-D", data, "-o", options, "-l", f"{data}.log", "-w", "start")

    def start_if_stopped(self) -> None:
        """Starts it unless it runs."""
        if not (self.folder / "data" / "postmaster.pid").exists():
            self.start()

    def stop(self) -> None:
        """Stops it, ending every session (``-m fast``)."""
        self._as_postgres("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")


@contextmanager
def throwaway_postgres(bindir: Path | None = None) -> Iterator[ThrowawayPostgres]:
    """A started ``ThrowawayPostgres``, stopped and removed on exit; skips without PostgreSQL.

    ``bindir`` holds its programs; by default the installed PostgreSQL's (``pg_config``).
    """
    bindir = bindir or _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL's initdb is required in CI (in {bindir})")
        pytest.skip(f"PostgreSQL's initdb is not installed (in {bindir})")
    folder = Path(tempfile.mkdtemp(prefix="lgcp-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    postgres = ThrowawayPostgres(folder, free_port(), bindir)
    postgres._as_postgres(
        "initdb", "-D", str(folder / "data"), "-U", "postgres", "-A", "trust", "--no-sync"
    )
    postgres.start()
    try:
        yield postgres
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)
