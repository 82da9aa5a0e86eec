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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
