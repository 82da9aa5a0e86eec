"""Log output: one JSON object per line for log collectors, or plain text for a terminal.

Fields a record carries in ``extra`` (the access log's method, code, duration...) become keys
of the JSON object, and ``key=value`` pairs after the message in text.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import queue
import sys
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener

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


class _Enqueue(QueueHandler):
    """Hands records to the writing thread, as they are, and drops them if it is stuck.

    Writing to stderr blocks when whoever reads it falls behind (a pipe, a container's log
    driver); on the event loop that would stall every call. A record is formatted by the
    writing thread (the stdlib's QueueHandler formats first, for queues between processes).
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        # Full: stderr has not been read for _QUEUED lines, and there is nothing better to do.
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(record)


_QUEUED = 10_000
_writer: QueueListener | None = None


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
    global _writer  # the one writer of the process's one root logger
    if _writer is not None:
        _writer.stop()
        atexit.unregister(_writer.stop)
    records: queue.Queue[logging.LogRecord] = queue.Queue(_QUEUED)
    _writer = QueueListener(records, handler)
    _writer.start()
    atexit.register(_writer.stop)  # writes what is queued before the process exits
    enqueue = _Enqueue(records)
    enqueue.addFilter(_LateReplies())
    root = logging.getLogger()
    root.handlers[:] = [enqueue]
    root.setLevel(level.upper())
