"""The policy in force, reloaded from its file on SIGHUP or when the file changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from checkpoint_server.auth.policy import Policy
from checkpoint_server.auth.policy_file import PolicyFileError, load_policy

logger = logging.getLogger(__name__)

_Stamp = tuple[int, int, int] | None


class PolicySource:
    """Holds the current policy of a policy file; a bad reload keeps the previous one.

    Attributes:
        path: The policy file.
        policy: The policy in force.

    """

    def __init__(self, path: Path) -> None:
        """Reads the file.

        Raises:
            PolicyFileError: The file is missing or invalid: the server must not start.

        """
        self.path = path
        self._stamp = _stamp(path)
        self.policy: Policy = load_policy(path)

    def reload(self) -> bool:
        """Reads the file again; returns whether the new policy is in force."""
        self._stamp = _stamp(self.path)
        try:
            policy = load_policy(self.path)
        except PolicyFileError as error:
            logger.error("auth file not reloaded, the previous policy stays: %s", error)
            return False
        self.policy = policy
        logger.info(
            "auth file %s reloaded: %d tokens, %d certificates",
            self.path,
            len(policy.tokens),
            len(policy.certificates),
        )
        return True

    async def watch(self, interval: float = 2.0) -> None:
        """Reloads on SIGHUP, and when the file changes (checked every ``interval`` s)."""
        loop = asyncio.get_running_loop()
        hooked = False
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)  # only in the main thread
            hooked = True
        try:
            while True:
                await asyncio.sleep(interval)
                if _stamp(self.path) != self._stamp:
                    self.reload()
        finally:
            if hooked:
                loop.remove_signal_handler(signal.SIGHUP)


def _stamp(path: Path) -> _Stamp:
    # The inode catches an atomic rename (and a Kubernetes secret's symlink swap).
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
