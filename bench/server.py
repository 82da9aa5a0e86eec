"""A checkpoint server in its own process, started and stopped by the benchmark."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_READY = re.compile(r"serving \S+ on port (\d+)")
_START_TIMEOUT = 60.0


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark dies, even if it is killed outright."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A ``checkpoint_server serve`` child process listening on 127.0.0.1.

    Its log goes to a file, as a deployed server's goes to its collector: read through a pipe,
    every access-log line would cost the benchmark's own process a thread wake-up and the
    interpreter lock, which counts against the saver being measured.
    """

    process: subprocess.Popen[str]
    port: int
    log_path: Path

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def target(self) -> str:
        """The ``grpc://host:port`` target of the server."""
        return f"grpc://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, database_url: str, *extra: str) -> ServerProcess:
        """Starts a server on ``database_url`` (with ``extra`` flags) and waits until it serves.

        Raises:
            RuntimeError: The server exited or did not serve within a minute.
        """
        fd, name = tempfile.mkstemp(prefix="checkpoint-server-", suffix=".log")
        log_path = Path(name)
        with os.fdopen(fd, "w") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "checkpoint_server",
                    "serve",
                    "--database-url",
                    database_url,
                    "--listen",
                    "127.0.0.1:0",
                    *extra,
                ],
                stderr=log,
                stdout=subprocess.DEVNULL,
                text=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while not (match := _READY.search(log_path.read_text(encoding="utf-8", errors="replace"))):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                text = log_path.read_text(encoding="utf-8", errors="replace")
                log_path.unlink()
                raise RuntimeError("checkpoint server did not start:\n" + text)
            time.sleep(0.05)
        return cls(process, int(match.group(1)), log_path)

    def stop(self) -> None:
        """Sends SIGTERM and waits for the exit, killing the process if it hangs; drops the log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)
