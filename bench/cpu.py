"""CPU time of this process and of a child process, to see which side a run spends it on."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of ``pid`` from ``/proc``; None where that is unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 0, utime field 11 and stime field 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by this process and, if any, the server process."""

    own: float
    server: float | None

    @classmethod
    def take(cls, server_pid: int | None) -> CpuSample:
        """Reads both counters now."""
        server = None if server_pid is None else process_cpu_seconds(server_pid)
        return cls(time.process_time(), server)

    def since(self, earlier: CpuSample) -> CpuSample:
        """The CPU seconds used between ``earlier`` and this sample."""
        server = None
        if self.server is not None and earlier.server is not None:
            server = self.server - earlier.server
        return CpuSample(self.own - earlier.own, server)
