"""Log output: one JSON object per line for log collectors, or plain text for a terminal.

Fields a record carries in ``extra`` (the access log's method, code, duration...) become keys
of the JSON object, and ``key=value`` pairs after the message in text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# The attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extra(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extra(record),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value...`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, its extras appended."""
        line = super().format(record)
        extra = " ".join(f"{key}={value!r}" for key, value in _extra(record).items())
        return f"{line} {extra}" if extra else line


class _LateReplies(logging.Filter):
    """Drops gRPC's traceback for a reply the client no longer waits for.

    A handler that finishes just after the call's deadline or the client's cancel has nothing
    to send its reply on; gRPC's asyncio server logs that as an ERROR with a traceback
    (``ExecuteBatchError``), once per such call. The call's outcome is already in the access
    log (DEADLINE_EXCEEDED or CANCELLED), so the traceback is only noise, and a flood of it
    under deadline pressure.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.exc_info is not None
            and record.exc_info[0] is not None
            and record.exc_info[0].__name__ == "ExecuteBatchError"
        )


def configure(log_format: str | None, level: str) -> None:
    """Sends logs to stderr, as JSON unless ``log_format`` says text or stderr is a terminal.

    Args:
        log_format: ``"text"``, ``"json"``, or None to choose by whether stderr is a terminal.
        level: ``"debug"``, ``"info"``, ``"warning"`` or ``"error"``.

    """
    if log_format is None:
        log_format = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_LateReplies())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
