"""A checkpoint server in its own process, started and stopped by the benchmark."""

from __future__ import annotations

import ctypes
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

_PR_SET_PDEATHSIG = 1
_READY = re.compile(r"serving \S+ on port (\d+)")
_START_TIMEOUT = 60.0


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark dies, even if it is killed outright."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ServerProcess:
    """A ``checkpoint_server serve`` child process listening on 127.0.0.1."""

    process: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)

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
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )
        log: list[str] = []
        ready = threading.Event()
        port: list[int] = []

        def pump() -> None:
            # Keeps reading stderr for the whole life of the process: a full pipe would block it.
            assert process.stderr is not None
            for line in process.stderr:
                log.append(line)
                if not ready.is_set() and (match := _READY.search(line)):
                    port.append(int(match.group(1)))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(_START_TIMEOUT) or not port:
            process.kill()
            process.wait()
            raise RuntimeError("checkpoint server did not start:\n" + "".join(log))
        return cls(process, port[0], log)

    def stop(self) -> None:
        """Sends SIGTERM and waits for the exit, killing the process if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
