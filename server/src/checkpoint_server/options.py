"""Checking settings given as flags or environment variables, with one clear message each.

A setting is checked once, at start-up, by the same converter whether it came from a flag or
from the environment: a bad value stops the command with one line naming where it came from
and what is allowed, before anything is opened.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

_T = TypeVar("_T")

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):(?P<port>\d{1,5})$")


class SettingError(Exception):
    """A setting from the environment has a value that is not allowed."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, with no usage text above them."""

    def error(self, message: str) -> NoReturn:
        """Prints ``PROG: error: MESSAGE`` and exits 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def env(name: str, convert: Callable[[str], _T], default: _T) -> _T:
    """The value of environment variable ``name`` through ``convert``, or ``default``.

    Raises:
        SettingError: The variable is set to a value ``convert`` refuses.

    """
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as error:
        raise SettingError(f"environment variable {name}={raw!r}: {error}") from None


def positive_int(value: str) -> int:
    """An integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {value!r}")
    return number


def _number(value: str, *, minimum: float, inclusive: bool) -> float:
    allowed = f"a number {'>=' if inclusive else '>'} {minimum:g} (seconds)"
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {allowed}, not {value!r}") from None
    too_small = number < minimum if inclusive else number <= minimum
    if not math.isfinite(number) or too_small:
        raise argparse.ArgumentTypeError(f"must be {allowed}, not {value!r}")
    return number


def positive_seconds(value: str) -> float:
    """A finite number of seconds above 0 (an interval of 0 would spin)."""
    return _number(value, minimum=0, inclusive=False)


def non_negative_seconds(value: str) -> float:
    """A finite number of seconds, 0 or more."""
    return _number(value, minimum=0, inclusive=True)


def choice(choices: Sequence[str]) -> Callable[[str], str]:
    """A converter accepting one of ``choices``, for flags and environment variables alike."""

    def convert(value: str) -> str:
        if value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return convert


def address(value: str) -> str:
    """``host:port`` with a port from 0 to 65535 (0 picks a free port)."""
    match = _ADDRESS.match(value)
    if match is None or int(match["port"]) > 65535:
        raise argparse.ArgumentTypeError(f"must be host:port with a port 0-65535, not {value!r}")
    return value


def boolean(value: str) -> bool:
    """``true``/``1``/``yes``/``on`` or ``false``/``0``/``no``/``off`` (environment variables)."""
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, not {value!r}")
