"""Authentication and authorization against a real server, on both databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api
from lgcheckpoint.v1.checkpoint_service_pb2_grpc import CheckpointServiceStub
from lgcheckpoint.v1.thread_service_pb2_grpc import ThreadServiceStub

from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError
from tests.conftest import ServerProcess, fresh_sqlite_url, postgres_database
from tests.security import Metadata, bearer, new_token, snapshot, write_auth_file
from tests.test_service import put_chain

A, B = "team-a", "team-b"
TOKENS = {name: new_token() for name in ("read_a", "write_a", "admin_a", "admin_b", "root")}
TOKENS["read_a"] = "-" + TOKENS["read_a"]  # a URL-safe token may start with "-"
GRANTS = {
    "read_a": {A: "read"},
    "write_a": {A: "write"},
    "admin_a": {A: "admin"},
    "admin_b": {B: "admin"},
    "root": {"*": "admin"},
}
READ, WRITE, ADMIN = "read", "write", "admin"


def _requests(thread_id: str) -> dict[str, tuple[str, Any]]:
    """A request of every RPC on namespace A, with the role it needs."""
    return {
        "PutCheckpoint": (
            WRITE,
            api.PutCheckpointRequest(
                namespace=A,
                thread_id=thread_id,
                checkpoint_id="99",
                checkpoint=pb.Payload(type="json", data=b"{}"),
                metadata_json=b'{"step": 9}',
            ),
        ),
        "PutWrites": (
            WRITE,
            api.PutWritesRequest(
                namespace=A,
                thread_id=thread_id,
                checkpoint_id="1",
                writes=[
                    pb.PendingWrite(
                        task_id="t", idx=0, channel="c", value=pb.Payload(type="json", data=b"1")
                    )
                ],
            ),
        ),
        "GetCheckpoint": (READ, api.GetCheckpointRequest(namespace=A, thread_id=thread_id)),
        "ListCheckpoints": (READ, api.ListCheckpointsRequest(namespace=A, thread_id=thread_id)),
        "GetDeltaChannelHistory": (
            READ,
            api.GetDeltaChannelHistoryRequest(
                namespace=A, thread_id=thread_id, checkpoint_id="1", channels=["value"]
            ),
        ),
        "CopyThread": (
            WRITE,
            api.CopyThreadRequest(namespace=A, source_thread_id=thread_id, target_thread_id="x"),
        ),
        "DeleteThread": (ADMIN, api.DeleteThreadRequest(namespace=A, thread_id=thread_id)),
        "DeleteForRuns": (ADMIN, api.DeleteForRunsRequest(namespace=A, run_ids=["run-1"])),
        "PruneThreads": (
            ADMIN,
            api.PruneThreadsRequest(
                namespace=A, thread_ids=[thread_id], strategy=pb.PRUNE_STRATEGY_DELETE
            ),
        ),
        "CreateThread": (WRITE, thread_api.CreateThreadRequest(namespace=A, thread_id="new")),
        "GetThread": (READ, thread_api.GetThreadRequest(namespace=A, thread_id=thread_id)),
        "UpdateThread": (
            WRITE,
            thread_api.UpdateThreadRequest(
                namespace=A, thread_id=thread_id, metadata_json=b'{"x": 1}'
            ),
        ),
        "SearchThreads": (READ, thread_api.SearchThreadsRequest(namespace=A)),
        "CountThreads": (READ, thread_api.CountThreadsRequest(namespace=A)),
        "WatchEvents": (READ, thread_api.WatchEventsRequest(namespace=A, from_beginning=True)),
        "AcquireLease": (
            WRITE,
            api.AcquireLeaseRequest(
                namespace=A, thread_id=f"{thread_id}-leased", ttl=Duration(seconds=5)
            ),
        ),
        "RenewLease": (
            WRITE,
            api.RenewLeaseRequest(
                namespace=A, thread_id=thread_id, lease=_LEASE, ttl=Duration(seconds=5)
            ),
        ),
        "ReleaseLease": (
            WRITE,
            api.ReleaseLeaseRequest(namespace=A, thread_id=thread_id, lease=_LEASE),
        ),
    }


# Well-formed, held by nobody: the gate must refuse before the lease is looked at.
_LEASE = pb.Lease(lease_id="0" * 32, fencing=1)


@dataclass
class Secured:
    server: ServerProcess
    database_url: str
    auth_file: Path
    channel: grpc.Channel
    last_error: str = ""

    def call(self, method: str, request: Any, metadata: Metadata) -> grpc.StatusCode:
        """The status of one call; a stream counts as OK once it yields its first event."""
        service = (
            ThreadServiceStub(self.channel)
            if hasattr(thread_api, type(request).__name__)
            else CheckpointServiceStub(self.channel)
        )
        try:
            answer = getattr(service, method)(request, metadata=metadata, timeout=10)
            if method == "WatchEvents":
                next(iter(answer))
                answer.cancel()
        except grpc.RpcError as error:
            self.last_error = error.details() or ""
            return error.code()
        return grpc.StatusCode.OK


def _database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield fresh_sqlite_url(tmp_path)
        return
    with postgres_database("lgcp_auth") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    if request.param == "postgres":
        request.getfixturevalue("postgres_url")  # skips or fails as the session decided
    tmp_path = tmp_path_factory.mktemp("auth")
    auth_file = write_auth_file(
        tmp_path / "auth.toml", {name: (TOKENS[name], GRANTS[name]) for name in TOKENS}
    )
    for url in _database(request.param, tmp_path):
        server = ServerProcess.start(url, "--auth-file", str(auth_file))
        with grpc.insecure_channel(server.target) as channel:
            yield Secured(server, url, auth_file, channel)
        assert server.stop() == 0
        log = "".join(server.log)
        for token in TOKENS.values():
            assert token not in log


def _seed(secured: Secured) -> str:
    thread_id = f"t-{uuid.uuid4().hex[:6]}"
    with GrpcSaver.from_conn_string(
        f"grpc://{secured.server.target}", namespace=A, token=TOKENS["admin_a"]
    ) as s:
        put_chain(s, thread_id, 2, run_id="run-1")
        s.threads.create(f"{thread_id}-created", metadata={"k": "v"})
    return thread_id


_DENIED = [
    ("no token", None, grpc.StatusCode.UNAUTHENTICATED),
    ("bad token", "not-a-known-token", grpc.StatusCode.UNAUTHENTICATED),
    ("another namespace's admin", "admin_b", grpc.StatusCode.PERMISSION_DENIED),
]


def test_every_rpc_refuses_callers_without_the_role_and_changes_nothing(secured: Secured) -> None:
    thread_id = _seed(secured)
    requests = _requests(thread_id)
    before = snapshot(secured.database_url)
    for method, (role, request) in requests.items():
        for label, who, code in _DENIED:
            token = TOKENS.get(who or "", who)
            got = secured.call(method, request, bearer(token) if token else ())
            assert got == code, f"{method} with {label}: {got}"
            if code == grpc.StatusCode.PERMISSION_DENIED:
                assert f"lacks the {role} role on namespace '{A}'" in secured.last_error
        weaker = {WRITE: ["read_a"], ADMIN: ["read_a", "write_a"]}.get(role, [])
        for name in weaker:
            got = secured.call(method, request, bearer(TOKENS[name]))
            assert got == grpc.StatusCode.PERMISSION_DENIED, f"{method} with {name}"
            assert f"lacks the {role} role on namespace '{A}'" in secured.last_error
    assert snapshot(secured.database_url) == before  # not one row changed
    # The least role each RPC needs is enough: the same requests pass the gate.
    least = {READ: "read_a", WRITE: "write_a", ADMIN: "admin_a"}
    for method, (role, request) in requests.items():
        got = secured.call(method, request, bearer(TOKENS[least[role]]))
        assert got not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        assert secured.call(method, request, bearer(TOKENS["root"])) not in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )


def test_a_denial_does_not_reveal_whether_the_thread_exists(secured: Secured) -> None:
    thread_id = _seed(secured)
    answers = set()
    for thread in (thread_id, "no-such-thread"):
        request = api.GetCheckpointRequest(namespace=A, thread_id=thread)
        code = secured.call("GetCheckpoint", request, bearer(TOKENS["admin_b"]))
        answers.add((code, secured.last_error))
    assert len(answers) == 1


def test_malformed_requests_and_headers_are_unauthenticated_first(secured: Secured) -> None:
    call: Any = secured.channel.unary_unary("/lgcheckpoint.v1.CheckpointService/GetCheckpoint")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\x0a\x02\xff\xfe", timeout=10)  # namespace is not UTF-8
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    request = thread_api.CountThreadsRequest(namespace=A)
    for header in (f"Basic {TOKENS['admin_a']}", "Bearer ", TOKENS["admin_a"]):
        got = secured.call("CountThreads", request, (("authorization", header),))
        assert got == grpc.StatusCode.UNAUTHENTICATED, header
    two = (*bearer(TOKENS["admin_a"]), *bearer(TOKENS["admin_b"]))
    assert secured.call("CountThreads", request, two) == grpc.StatusCode.UNAUTHENTICATED


def test_the_empty_namespace_is_the_default_one(secured: Secured) -> None:
    request = thread_api.CountThreadsRequest(namespace="")
    assert secured.call("CountThreads", request, bearer(TOKENS["root"])) == grpc.StatusCode.OK
    assert (
        secured.call("CountThreads", request, bearer(TOKENS["admin_a"]))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert "namespace 'default'" in secured.last_error


def test_saver_sync_and_async_send_the_token(secured: Secured) -> None:
    target = f"grpc://{secured.server.target}"
    with GrpcSaver.from_conn_string(target, namespace=A, token=TOKENS["write_a"]) as saver:
        put_chain(saver, "saver-sync", 1)
        assert saver.threads.count() >= 1
    with (
        GrpcSaver.from_conn_string(target, namespace=A) as anonymous,
        pytest.raises(GrpcSaverError) as caught,
    ):
        anonymous.threads.count()
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED

    async def run() -> None:
        async with GrpcSaver.from_conn_string(target, namespace=A, token=TOKENS["read_a"]) as s:
            assert await s.aget_tuple({"configurable": {"thread_id": "saver-sync"}}) is not None
            assert await s.athreads.count() >= 1
            events: Any = s.athreads.watch(from_beginning=True)
            assert (await anext(events)).kind
            await events.aclose()
            with pytest.raises(GrpcSaverError) as denied:
                await s.adelete_thread("saver-sync")
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED

    import asyncio

    asyncio.run(run())


def test_saver_reads_the_token_from_the_environment(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LGCHECKPOINT_TOKEN", TOKENS["read_a"])
    with GrpcSaver.from_conn_string(f"grpc://{secured.server.target}", namespace=A) as saver:
        assert saver.threads.count() >= 0
        events: Any = saver.threads.watch(from_beginning=True)
        assert next(events).kind
        events.close()


def test_health_stays_open_and_reflection_follows_its_setting(secured: Secured) -> None:
    health: Any = health_pb2_grpc.HealthStub(secured.channel)
    response = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflect: Any = reflection_pb2_grpc.ServerReflectionStub(secured.channel)
    answers = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    assert next(answers).list_services_response.service


def test_threads_cli_takes_a_token(secured: Secured) -> None:
    thread_id = _seed(secured)
    threads = [sys.executable, "-m", "checkpoint_server", "threads"]
    where = ["--namespace", A, "--address", secured.server.target]
    command = [*threads, "list", *where, "--json"]
    environment = {**os.environ, "LGCHECKPOINT_TOKEN": ""}
    refused = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr
    by_flag = subprocess.run(
        [*command, f"--token={TOKENS['read_a']}"], capture_output=True, text=True, timeout=60
    )
    assert by_flag.returncode == 0, by_flag.stderr
    environment["LGCHECKPOINT_TOKEN"] = TOKENS["read_a"]
    by_env = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert by_env.returncode == 0
    assert by_env.stdout == by_flag.stdout
    denied = subprocess.run(
        [*threads, "delete", thread_id, "--yes", *where],  # it exists: reading is allowed
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr


# --- reloading, and refusing to start -------------------------------------------------------


def _count(target: str, token: str) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        try:
            ThreadServiceStub(channel).CountThreads(
                thread_api.CountThreadsRequest(namespace=A), metadata=bearer(token), timeout=10
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_reload_revokes_and_grants_without_a_restart(tmp_path: Path) -> None:
    old, kept, new = new_token(), new_token(), new_token()
    auth_file = write_auth_file(
        tmp_path / "auth.toml", {"old": (old, {A: "read"}), "kept": (kept, {A: "write"})}
    )
    server = ServerProcess.start(fresh_sqlite_url(tmp_path), "--auth-file", str(auth_file))
    channel = grpc.insecure_channel(server.target)
    threads = ThreadServiceStub(channel)
    try:
        assert _count(server.target, old) == grpc.StatusCode.OK
        threads.CreateThread(
            thread_api.CreateThreadRequest(namespace=A, thread_id="1"), metadata=bearer(kept)
        )
        watching = threads.WatchEvents(
            thread_api.WatchEventsRequest(namespace=A, from_beginning=True),
            metadata=bearer(old),
            timeout=30,
        )
        assert next(watching).event.thread_id == "1"

        write_auth_file(auth_file, {"kept": (kept, {A: "write"})})
        server.process.send_signal(signal.SIGHUP)
        _until(lambda: _count(server.target, old) == grpc.StatusCode.UNAUTHENTICATED)
        assert _count(server.target, kept) == grpc.StatusCode.OK
        # The open watch of the revoked token gets no further event.
        threads.CreateThread(
            thread_api.CreateThreadRequest(namespace=A, thread_id="2"), metadata=bearer(kept)
        )
        with pytest.raises(grpc.RpcError) as ended:
            next(watching)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # A broken file keeps the policy in force, and says so in one line.
        auth_file.write_text("[tokens.kept]\nsha256 = 'nope'\n")
        server.process.send_signal(signal.SIGHUP)
        _until(lambda: any("not reloaded" in line for line in server.log))
        assert _count(server.target, kept) == grpc.StatusCode.OK
        assert _count(server.target, old) == grpc.StatusCode.UNAUTHENTICATED
        complaint = [line for line in server.log if "not reloaded" in line]
        assert len(complaint) == 1
        assert "tokens.kept.sha256" in complaint[0]

        # A changed file is picked up without a signal.
        write_auth_file(auth_file, {"kept": (kept, {A: "write"}), "new": (new, {A: "read"})})
        _until(lambda: _count(server.target, new) == grpc.StatusCode.OK)
    finally:
        channel.close()
        assert server.stop() == 0
    log = "".join(server.log)
    assert not any(token in log for token in (old, kept, new))


def _until(condition: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "checkpoint_server", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refuses_a_network_address_without_auth(tmp_path: Path) -> None:
    result = _serve("--database-url", fresh_sqlite_url(tmp_path), "--listen", "0.0.0.0:0")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "without authentication" in lines[0]
    assert "--insecure-no-auth" in lines[0]
    assert not (tmp_path / "checkpoints.db").exists()  # refused before touching anything


def _network_start_log(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """The log of a server on every address up to "serving"; then it is stopped."""
    server = subprocess.Popen(
        [sys.executable, "-m", "checkpoint_server", "serve", "--listen", "0.0.0.0:0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert server.stderr is not None
    lines = []
    try:
        for line in server.stderr:
            lines.append(line)
            if "serving" in line:
                break
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
        server.stderr.close()
    assert "serving" in lines[-1], "".join(lines)
    return lines


def test_insecure_no_auth_serves_a_network_address(tmp_path: Path) -> None:
    log = _network_start_log("--database-url", fresh_sqlite_url(tmp_path), "--insecure-no-auth")
    assert not any("plaintext" in line for line in log)


def test_insecure_no_auth_from_the_environment(tmp_path: Path) -> None:
    url = fresh_sqlite_url(tmp_path)
    _network_start_log("--database-url", url, env={"CHECKPOINT_SERVER_INSECURE_NO_AUTH": "true"})
    refused = subprocess.run(
        [sys.executable, "-m", "checkpoint_server", "serve", "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHECKPOINT_SERVER_INSECURE_NO_AUTH": "false"},
    )
    assert refused.returncode != 0
    assert "without authentication" in refused.stderr


def test_tokens_in_plaintext_on_a_network_are_warned_about(tmp_path: Path) -> None:
    auth_file = write_auth_file(tmp_path / "auth.toml", {"t": (new_token(), {A: "read"})})
    url = fresh_sqlite_url(tmp_path)
    log = _network_start_log("--database-url", url, "--auth-file", str(auth_file))
    assert [line for line in log if "bearer tokens reach 0.0.0.0:0 in plaintext" in line]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("[tokens.x]\ngrants = { a = 'read' }\n", "tokens.x.sha256"),
        (f"[tokens.x]\nsha256 = '{'0' * 64}'\ngrants = {{ a = 'owner' }}\n", "tokens.x.grants.a"),
        ("[tokens.x\n", "not valid TOML"),
        ("[token.x]\n", "token: unknown key"),
    ],
)
def test_refuses_a_bad_auth_file_in_one_line(tmp_path: Path, content: str, named: str) -> None:
    auth_file = tmp_path / "auth.toml"
    auth_file.write_text(content)
    result = _serve("--database-url", fresh_sqlite_url(tmp_path), "--auth-file", str(auth_file))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]


def test_no_reflection_turns_it_off(tmp_path: Path) -> None:
    server = ServerProcess.start(fresh_sqlite_url(tmp_path), "--no-reflection")
    try:
        with grpc.insecure_channel(server.target) as channel:
            reflect: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            with pytest.raises(grpc.RpcError) as caught:
                next(answers)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--tls-cert", "server.pem"), "--tls-cert and --tls-key go together"),
        (("--tls-client-ca", "ca.pem"), "--tls-client-ca needs --tls-cert and --tls-key"),
        (("--tls-cert", "nowhere.pem", "--tls-key", "nowhere.key"), "cannot be read"),
    ],
)
def test_refuses_incomplete_tls_settings_in_one_line(
    tmp_path: Path, flags: tuple[str, ...], said: str
) -> None:
    result = _serve("--database-url", fresh_sqlite_url(tmp_path), *flags)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert said in lines[0]
