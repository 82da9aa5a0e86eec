"""Log output: one JSON object per line for log collectors, or plain text for a terminal.

Fields a record carries in ``extra`` (the access log's method, code, duration...) become keys
of the JSON object, and ``key=value`` pairs after the message in text.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from typing import TextIO

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


class _Writer(logging.Handler):
    """Writes records to a stream from a thread of its own, in batches; drops them if it is stuck.

    Writing to stderr blocks when whoever reads it falls behind (a pipe, a container's log
    driver); on the event loop that would stall every call. So a record is only appended to a
    list here, and the thread formats and writes what has piled up every ``_PERIOD`` seconds, or
    at once for a warning or worse. Waking the thread for every access-log line (as the stdlib's
    QueueListener does) cost the server more CPU than the line itself. Lines dropped while the
    stream was stuck are counted, and the count is logged once it takes lines again.
    """

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._stream = stream
        self._records: deque[logging.LogRecord] = deque()
        self._urgent = threading.Event()
        self._stopping = False
        self._dropped = 0  # since the last line that said so
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Full: stderr has not been read for _QUEUED lines, and there is nothing better to do.
        if len(self._records) >= _QUEUED:
            self._dropped += 1  # under the handler's lock, like every emit
            return
        self._records.append(record)
        if record.levelno >= logging.WARNING:
            self._urgent.set()

    def close(self) -> None:
        """Writes what is left and stops the thread; gives up on a stream stuck for long.

        Called twice at exit (by ``atexit`` and by ``logging.shutdown``): the second call
        returns at once.
        """
        if not self._stopping:
            self._stopping = True
            self._urgent.set()
            self._thread.join(_LAST_WRITE)
        super().close()

    def _run(self) -> None:
        while not self._stopping:
            self._urgent.wait(_PERIOD)
            self._urgent.clear()
            self._write()
        while self._records or self._dropped:
            self._write()

    def _write(self) -> None:
        lines = []
        with self.lock:  # type: ignore[union-attr] # created by Handler.__init__
            dropped, self._dropped = self._dropped, 0
        if dropped:
            notice = logging.LogRecord(
                __name__,
                logging.WARNING,
                __file__,
                0,
                "%d log lines were dropped: stderr was not read",
                (dropped,),
                None,
            )
            lines.append(self.format(notice) + "\n")
        # Only what waits now: records that keep coming must not keep the batch from the stream.
        for _ in range(len(self._records)):
            record = self._records.popleft()
            try:
                lines.append(self.format(record) + "\n")
            except Exception:  # one bad record must not silence the log
                self.handleError(record)
        if lines:
            with contextlib.suppress(OSError, ValueError):  # stderr gone or closed
                self._stream.write("".join(lines))
                self._stream.flush()


_QUEUED = 10_000
_PERIOD = 0.05
_LAST_WRITE = 2.0  # seconds an exiting server waits for stderr to take its last lines
_writer: _Writer | None = None


def configure(log_format: str | None, level: str) -> None:
    """Sends logs to stderr, as JSON unless ``log_format`` says text or stderr is a terminal.

    Args:
        log_format: ``"text"``, ``"json"``, or None to choose by whether stderr is a terminal.
        level: ``"debug"``, ``"info"``, ``"warning"`` or ``"error"``.

    """
    if log_format is None:
        log_format = "text" if sys.stderr.isatty() else "json"
    global _writer  # the one writer of the process's one root logger
    if _writer is not None:
        _writer.close()
        atexit.unregister(_writer.close)
    _writer = _Writer(sys.stderr, JsonFormatter() if log_format == "json" else TextFormatter())
    atexit.register(_writer.close)  # writes what is left before the process exits
    _writer.addFilter(_LateReplies())
    root = logging.getLogger()
    root.handlers[:] = [_writer]
    root.setLevel(level.upper())
