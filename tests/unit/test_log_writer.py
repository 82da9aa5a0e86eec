"""The log writer: a stream that stops taking lines drops them, counted, and holds nothing up.

The stream is a real pipe whose reader starts late, as stderr is when a log collector stalls.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from checkpoint_server import logs


def test_lines_dropped_while_the_stream_is_stuck_are_counted_in_the_log() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    writer = logs._Writer(stream, logs.JsonFormatter())
    logger = logging.getLogger("test.log_writer")
    logger.propagate = False
    logger.addHandler(writer)
    try:
        total = 40_000  # far more than the writer keeps (10,000) and than the pipe holds
        started = time.monotonic()
        for index in range(total):
            logger.warning("line %d", index)
        assert time.monotonic() - started < 5  # the logging thread was never held up

        received: list[str] = []

        def read() -> None:
            with os.fdopen(read_end) as lines:
                received.extend(lines)

        reader = threading.Thread(target=read)
        reader.start()
        logger.removeHandler(writer)
        writer.close()
        stream.close()
        reader.join(10)
    finally:
        logger.removeHandler(writer)
    records = [json.loads(line) for line in received]
    written = [r for r in records if r["message"].startswith("line ")]
    [notice] = [r for r in records if "dropped" in r["message"]]
    dropped = int(notice["message"].split()[0])
    assert notice["level"] == "warning"
    assert dropped > 0
    assert len(written) + dropped == total
    numbers = [int(r["message"].split()[1]) for r in written]
    assert numbers == sorted(numbers)  # what was kept keeps its order
