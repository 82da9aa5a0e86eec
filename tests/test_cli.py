"""The operator's thread commands, against a real server on both databases.

Each runs twice: as ``checkpoint-threads`` (the client's console script) and as
``checkpoint-server threads`` (the server's command, which execs the client's).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lgcheckpoint.v1
import pytest
from langgraph.types import Interrupt

import checkpoint_server
import langgraph.checkpoint.grpc
from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError
from tests.conftest import ServerProcess
from tests.test_service import put_chain


@pytest.fixture
def saver(server: ServerProcess, namespace: str) -> Iterator[GrpcSaver]:
    with GrpcSaver.from_conn_string(f"grpc://{server.target}", namespace=namespace) as saver:
        yield saver


SERVER_THREADS = [sys.executable, "-m", "checkpoint_server", "threads"]
CLIENT_THREADS = [str(Path(sys.executable).with_name("checkpoint-threads"))]


class Cli:
    """Runs ``COMMAND ARGS...`` against a server, in one namespace."""

    def __init__(self, command: list[str], server: ServerProcess, namespace: str) -> None:
        self.command = command
        self.options = ["--address", server.target, "--namespace", namespace]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        """One command."""
        return self.many(args)[0]

    def many(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Independent commands, run at once (each process spends most of its time starting)."""
        processes = [
            subprocess.Popen(
                [*self.command, *args, *self.options],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        results = []
        for args, process in zip(commands, processes, strict=True):
            stdout, stderr = process.communicate(timeout=30)
            results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
        return results


@pytest.fixture(params=["checkpoint-server threads", "checkpoint-threads"])
def cli(request: pytest.FixtureRequest, server: ServerProcess, namespace: str) -> Cli:
    command = SERVER_THREADS if request.param == "checkpoint-server threads" else CLIENT_THREADS
    return Cli(command, server, namespace)


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _seed(saver: GrpcSaver) -> None:
    """``alpha`` (3 checkpoints), ``beta`` (interrupted), ``gamma`` (no checkpoints)."""
    saver.threads.create("alpha", metadata={"team": "red", "n": 1})
    put_chain(saver, "alpha", 3)
    saver.threads.create("beta", metadata={"team": "blue", "note": "x" * 100})
    latest = put_chain(saver, "beta", 2)[-1]
    saver.put_writes(latest, [("__interrupt__", [Interrupt(value="approve?")])], "task")
    saver.threads.create("gamma", metadata={"team": "red"})


def test_list(saver: GrpcSaver, cli: Cli) -> None:
    _seed(saver)
    listed_json, table, red_json, paged = cli.many(
        ("list", "--json", "--sort-by", "thread_id", "--asc"),
        ("list",),
        ("list", "--json", "--metadata", 'team="red"', "--status", "idle"),
        ("list", "--all", "--limit", "1", "--sort-by", "thread_id"),
    )
    listed = _json(listed_json)
    assert [t["thread_id"] for t in listed] == ["alpha", "beta", "gamma"]
    assert [t["status"] for t in listed] == ["idle", "interrupted", "idle"]
    assert listed[0]["metadata"] == {"team": "red", "n": 1}
    assert listed[0]["latest_checkpoint_id"] == saver.threads.get("alpha").latest_checkpoint_id
    assert listed[2]["latest_checkpoint_id"] is None

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["THREAD_ID", "STATUS", "UPDATED", "CREATED", "METADATA"]
    assert [line.split()[0] for line in lines[1:4]] == ["gamma", "beta", "alpha"]  # newest first
    assert "interrupted" in lines[2]
    assert '"team":"red"' in lines[3]
    assert "x" * 100 not in table.stdout  # long metadata is truncated
    assert lines[-1] == "3 threads"

    red = _json(red_json)
    assert sorted(t["thread_id"] for t in red) == ["alpha", "gamma"]

    assert paged.returncode == 0, paged.stderr
    assert [line.split()[0] for line in paged.stdout.splitlines()[1:-1]] == [
        "gamma",
        "beta",
        "alpha",
    ]


def test_show(saver: GrpcSaver, cli: Cli) -> None:
    _seed(saver)
    shown_json, human, missing = cli.many(
        ("show", "alpha", "--json"), ("show", "beta"), ("show", "nope")
    )
    shown = _json(shown_json)
    assert shown["thread_id"] == "alpha"
    assert shown["checkpoint_count"] == 3
    assert shown["values_bytes"] > 0
    assert shown["metadata"] == {"team": "red", "n": 1}
    assert shown["ttl"] is None

    assert human.returncode == 0, human.stderr
    fields = dict(line.split(":", 1) for line in human.stdout.splitlines() if ": " in line)
    assert fields["thread_id"].strip() == "beta"
    assert fields["status"].strip() == "interrupted"
    assert fields["checkpoint_count"].strip() == "2"
    assert "bytes)" in fields["writes_bytes"]
    assert '"team": "blue"' in human.stdout
    assert "approve?" not in human.stdout  # no payloads

    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("error: NOT_FOUND:")
    assert "nope" in missing.stderr


def test_history_newest_first_with_pending_interrupts(saver: GrpcSaver, cli: Cli) -> None:
    _seed(saver)
    history_json, table = cli.many(
        ("history", "beta", "--json"), ("history", "alpha", "--limit", "2")
    )
    history = _json(history_json)
    assert [c["step"] for c in history] == [1, 0]
    assert [c["source"] for c in history] == ["loop", "loop"]
    assert history[0]["pending"] == ["__interrupt__"]
    assert history[0]["parent_checkpoint_id"] == history[1]["checkpoint_id"]
    assert history[1]["parent_checkpoint_id"] is None

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["CHECKPOINT_ID", "PARENT", "STEP", "SOURCE", "CREATED", "PENDING"]
    assert [line.split()[2] for line in lines[1:-1]] == ["2", "1"]
    assert lines[-1] == "2 checkpoints"


def test_prune_keeps_the_latest(saver: GrpcSaver, cli: Cli) -> None:
    _seed(saver)
    latest = saver.threads.get("alpha").latest_checkpoint_id
    pruned = cli("prune", "alpha", "beta")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout == "pruned 2 threads (keep_latest)\n"
    for thread_id in ("alpha", "beta"):
        assert saver.threads.get(thread_id).checkpoint_count == 1
    assert saver.threads.get("alpha").latest_checkpoint_id == latest


def test_delete_asks_for_yes(saver: GrpcSaver, cli: Cli) -> None:
    _seed(saver)
    refused = cli("delete", "alpha")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert saver.threads.get("alpha").checkpoint_count == 3

    deleted = cli("delete", "alpha", "gamma", "--yes", "--json")
    assert _json(deleted) == {"deleted": ["alpha", "gamma"]}
    for thread_id in ("alpha", "gamma"):
        with pytest.raises(GrpcSaverError):
            saver.threads.get(thread_id)
    assert saver.threads.get("beta").checkpoint_count == 2


def test_a_cursor_that_looks_like_an_option_is_taken_as_the_cursor(cli: Cli) -> None:
    # Cursors are URL-safe base64: about one in 64 begins with "-".
    result = cli("watch", "--after", "-forged", "--json")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: INVALID_ARGUMENT:")


def test_watch_prints_events_with_cursors(saver: GrpcSaver, cli: Cli) -> None:
    _seed(saver)
    command = ["watch", "--from-beginning", "--json", *cli.options]
    process = subprocess.Popen(
        [*cli.command, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        events = [json.loads(process.stdout.readline()) for _ in range(4)]
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert [(e["kind"], e["thread_id"]) for e in events] == [
        ("thread_created", "alpha"),
        ("checkpoint_added", "alpha"),
        ("checkpoint_added", "alpha"),
        ("checkpoint_added", "alpha"),
    ]
    resumed = subprocess.Popen(
        [
            *cli.command,
            "watch",
            "--after",
            events[3]["cursor"],
            "--json",
            *cli.options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert resumed.stdout is not None
        following = json.loads(resumed.stdout.readline())
    finally:
        resumed.terminate()
        resumed.communicate(timeout=30)
    assert (following["kind"], following["thread_id"]) == ("thread_created", "beta")


def test_an_unknown_thread_is_not_found_and_changes_nothing(saver: GrpcSaver, cli: Cli) -> None:
    _seed(saver)
    history, prune, delete = cli.many(
        ("history", "nope"), ("prune", "alpha", "nope"), ("delete", "alpha", "nope", "--yes")
    )
    for result in (history, prune, delete):
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith("error: NOT_FOUND:")
        assert "'nope'" in result.stderr
    assert saver.threads.get("alpha").checkpoint_count == 3  # neither pruned nor deleted


def test_an_unreachable_server_fails_at_once_saying_why(cli: Cli) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    result = subprocess.run(
        [*cli.command, "list", "--address", closed, "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: UNAVAILABLE:"), result.stderr
    assert "Connection refused" in result.stderr  # the reason, not a deadline
    assert time.monotonic() - started < 30  # well before the call's deadline


def test_history_reads_no_values(saver: GrpcSaver, cli: Cli) -> None:
    # Values and interrupts are the serializer's bytes (ciphertext, with EncryptedSerializer):
    # the command lists a history whose payloads no serializer could read.
    _seed(saver)
    latest = saver.threads.get("beta").latest_checkpoint_id
    config = {"configurable": {"thread_id": "beta", "checkpoint_ns": "", "checkpoint_id": latest}}
    saver.serde = _Unreadable()
    saver.put_writes(config, [("__error__", "boom")], "other-task")  # type: ignore[arg-type]
    history = _json(cli("history", "beta", "--json"))
    assert history[0]["pending"] == ["__error__", "__interrupt__"]  # by task ID: other-task


class _Unreadable:
    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return "sealed", b"\x00not for you"

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        raise AssertionError("the command deserialized a value")


def test_server_threads_imports_no_client_in_its_own_process(
    saver: GrpcSaver, server: ServerProcess, namespace: str
) -> None:
    # -X importtime lists the imports of the server's process only: the command it execs is a
    # new interpreter without the flag. So the client and LangGraph appear nowhere in it.
    saver.threads.create("alpha")
    where = ["--address", server.target, "--namespace", namespace]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *SERVER_THREADS[1:], "list", "--json", *where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [t["thread_id"] for t in json.loads(result.stdout)] == ["alpha"]
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "checkpoint_server.cli" in imported
    heavy = [m for m in imported if m.startswith(("langgraph", "sqlalchemy", "google.protobuf"))]
    assert heavy == []


def test_server_threads_without_the_client_says_what_to_install(server: ServerProcess) -> None:
    # A process whose module path holds the server but not the client: the venv's packages
    # without the editable installs (python -S skips the .pth files), plus the server's source.
    paths = {
        "server": str(Path(checkpoint_server.__file__).parents[1]),
        "stubs": str(Path(lgcheckpoint.v1.__file__).parents[2]),
        "packages": sysconfig.get_paths()["purelib"],
    }

    def threads(*extra_paths: str) -> subprocess.CompletedProcess[str]:
        code = (
            "import sys\n"
            f"sys.path[:0] = {[*paths.values(), *extra_paths]!r}\n"
            "from checkpoint_server.cli import main\n"
            f"main(['threads', 'list', '--address', {server.target!r}])\n"
        )
        return subprocess.run(
            [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60
        )

    missing = threads()
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr == (
        "checkpoint-server threads: needs the Python client: "
        "pip install langgraph-checkpoint-grpc\n"
    )
    # The same process with the client's source on its path runs the command.
    client = str(Path(langgraph.checkpoint.grpc.__file__).parents[3])
    found = threads(client)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("THREAD_ID")
