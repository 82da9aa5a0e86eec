"""TLS and mTLS against a real server, from Python and through the operator CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from langgraph.checkpoint.grpc import GrpcSaver, GrpcSaverError, TlsConfig
from tests.conftest import ServerProcess, fresh_sqlite_url, postgres_database
from tests.pki import Authority, Pair
from tests.security import new_token, write_auth_file
from tests.test_service import put_chain

A = "team-a"
TOKEN = new_token()


@dataclass
class Pki:
    ca: Authority
    server: Pair
    named_server: Pair  # for checkpoints.test only, not for 127.0.0.1
    worker: Pair
    stranger: Pair
    rogue_worker: Pair  # same subject, signed by another CA
    by_san: Pair  # known by its DNS SAN, not its CN


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory, "trusted")
    rogue = Authority(directory, "rogue")
    return Pki(
        ca,
        ca.issue("server", server=True, dns=("localhost",), ip=True),
        ca.issue("named", server=True, dns=("checkpoints.test",)),
        ca.issue("worker-1"),
        ca.issue("stranger"),
        rogue.issue("worker-1"),
        ca.issue("nobody", dns=("worker.san.test",)),
    )


@dataclass
class Tls:
    target: str
    server: ServerProcess


def _serve(url: str, tmp_path: Path, pki: Pki, *extra: str) -> ServerProcess:
    auth_file = write_auth_file(
        tmp_path / "auth.toml",
        {"ci": (TOKEN, {A: "write"})},
        {"worker": ("worker-1", {A: "write"}), "san": ("worker.san.test", {A: "read"})},
    )
    return ServerProcess.start(url, "--auth-file", str(auth_file), *extra)


def _stop(server: ServerProcess) -> None:
    assert server.stop() == 0
    log = "".join(server.log)
    assert TOKEN not in log
    assert "BEGIN" not in log  # no certificate, no key


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def mtls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[Tls]:
    """A server that requires client certificates signed by the trusted CA."""
    tmp_path = tmp_path_factory.mktemp("mtls")
    flags: tuple[str, ...] = ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    flags += ("--tls-client-ca", str(pki.ca.cert))
    if request.param == "sqlite":
        server = _serve(fresh_sqlite_url(tmp_path), tmp_path, pki, *flags)
        yield Tls(f"grpcs://{server.target}", server)
        _stop(server)
        return
    request.getfixturevalue("postgres_url")
    with postgres_database("lgcp_tls") as url:
        server = _serve(url, tmp_path, pki, *flags)
        yield Tls(f"grpcs://{server.target}", server)
        _stop(server)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Tls]:
    """A TLS server without client certificates, whose certificate names checkpoints.test."""
    tmp_path = tmp_path_factory.mktemp("tls")
    flags = ("--tls-cert", str(pki.named_server.cert), "--tls-key", str(pki.named_server.key))
    server = _serve(fresh_sqlite_url(tmp_path), tmp_path, pki, *flags)
    yield Tls(f"grpcs://{server.target}", server)
    _stop(server)


def _works(target: str, **kwargs: object) -> None:
    with GrpcSaver.from_conn_string(target, namespace=A, timeout=5, **kwargs) as saver:
        put_chain(saver, "tls", 1)
        assert saver.get_tuple({"configurable": {"thread_id": "tls"}}) is not None


# A connection that cannot be made: the client waits for the server to be ready within the
# call's deadline (it may be restarting), so the call ends DEADLINE_EXCEEDED, not UNAVAILABLE.
NO_CONNECTION = grpc.StatusCode.DEADLINE_EXCEEDED


def _fails(target: str, code: grpc.StatusCode, **kwargs: object) -> None:
    with (
        GrpcSaver.from_conn_string(target, namespace=A, timeout=2, **kwargs) as saver,
        pytest.raises(GrpcSaverError) as caught,
    ):
        saver.threads.count()
    assert caught.value.code == code


def test_tls_needs_the_ca_and_the_servers_name(tls: Tls, pki: Pki) -> None:
    unavailable = NO_CONNECTION
    _fails(tls.target, unavailable, token=TOKEN)  # the system's roots do not know our CA
    _fails(tls.target, unavailable, token=TOKEN, tls=TlsConfig.from_files(ca_file=pki.ca.cert))
    named = TlsConfig.from_files(ca_file=pki.ca.cert, server_name="checkpoints.test")
    _works(tls.target, token=TOKEN, tls=named)
    _fails(tls.target, grpc.StatusCode.UNAUTHENTICATED, tls=named)
    _fails(tls.target.replace("grpcs://", "grpc://"), unavailable, token=TOKEN)


def test_mtls_admits_only_known_certificates_of_the_ca(mtls: Tls, pki: Pki) -> None:
    def files(pair: Pair | None) -> TlsConfig:
        return TlsConfig.from_files(
            ca_file=pki.ca.cert,
            cert_file=pair.cert if pair else None,
            key_file=pair.key if pair else None,
        )

    _works(mtls.target, tls=files(pki.worker))  # the certificate is the identity
    unavailable = NO_CONNECTION
    _fails(mtls.target, unavailable, tls=files(None), token=TOKEN)
    _fails(mtls.target, unavailable, tls=files(pki.rogue_worker))
    _fails(mtls.target, grpc.StatusCode.UNAUTHENTICATED, tls=files(pki.stranger))
    _works(mtls.target, tls=files(pki.stranger), token=TOKEN)
    with GrpcSaver.from_conn_string(mtls.target, namespace=A, tls=files(pki.by_san)) as by_san:
        assert by_san.get_tuple({"configurable": {"thread_id": "tls"}}) is not None
        with pytest.raises(GrpcSaverError) as read_only:
            by_san.delete_thread("tls")
        assert read_only.value.code == grpc.StatusCode.PERMISSION_DENIED

    async def run() -> None:
        async with GrpcSaver.from_conn_string(
            mtls.target, namespace=A, tls=files(pki.worker)
        ) as saver:
            assert await saver.aget_tuple({"configurable": {"thread_id": "tls"}}) is not None
            assert await saver.athreads.count() >= 1

    asyncio.run(run())


def test_saver_takes_tls_settings_from_the_environment(
    mtls: Tls, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LGCHECKPOINT_CA_FILE", str(pki.ca.cert))
    monkeypatch.setenv("LGCHECKPOINT_CERT_FILE", str(pki.worker.cert))
    monkeypatch.setenv("LGCHECKPOINT_KEY_FILE", str(pki.worker.key))
    _works(mtls.target)
    with pytest.raises(ValueError, match="grpcs://"):
        GrpcSaver("grpc://127.0.0.1:1", tls=TlsConfig())
    with pytest.raises(ValueError, match="go together"):
        TlsConfig.from_files(ca_file=pki.ca.cert, key_file=pki.worker.key)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LGCHECKPOINT_", "CHECK"))}
    return subprocess.run(
        [sys.executable, "-m", "checkpoint_server", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )


def test_threads_cli_and_health_over_mtls(mtls: Tls, pki: Pki) -> None:
    where = ("--address", mtls.target, "--namespace", A, "--json")
    ca = ("--ca-file", str(pki.ca.cert))
    worker = ("--cert-file", str(pki.worker.cert), "--key-file", str(pki.worker.key))
    listed = _cli("threads", "list", *where, *ca, *worker)
    assert listed.returncode == 0, listed.stderr
    assert '"tls"' in listed.stdout
    assert _cli("threads", "list", *where, *ca).returncode == 1  # no client certificate
    assert _cli("threads", "list", *where, *worker).returncode == 1  # the system's roots
    environment = {
        "LGCHECKPOINT_CA_FILE": str(pki.ca.cert),
        "LGCHECKPOINT_CERT_FILE": str(pki.worker.cert),
        "LGCHECKPOINT_KEY_FILE": str(pki.worker.key),
    }
    by_env = _cli("threads", "list", *where, env=environment)
    assert by_env.returncode == 0, by_env.stderr
    assert by_env.stdout == listed.stdout

    # What the image's health check runs: the address and TLS come from the environment.
    image = {
        **environment,
        "CHECKPOINT_SERVER_LISTEN": f"0.0.0.0:{mtls.server.port}",
        "CHECKPOINT_SERVER_TLS_CERT": str(pki.server.cert),
    }
    healthy = _cli("health", env=image)
    assert healthy.returncode == 0, healthy.stderr
    del image["LGCHECKPOINT_CERT_FILE"]
    half = _cli("health", env=image)
    assert half.returncode == 1
    assert "go together" in half.stderr
    del image["LGCHECKPOINT_KEY_FILE"]
    assert _cli("health", env=image).returncode == 1  # mTLS: no certificate, no health


def test_health_over_tls_needs_no_token_and_takes_a_server_name(tls: Tls, pki: Pki) -> None:
    ca = ("--ca-file", str(pki.ca.cert))
    named = _cli("health", "--address", tls.target, *ca, "--tls-server-name", "checkpoints.test")
    assert named.returncode == 0, named.stderr
    assert _cli("health", "--address", tls.target, *ca).returncode == 1
