"""The policy module on its own: roles, grants, tokens, the policy file, the RPC table."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lgcheckpoint.v1 import checkpoint_service_pb2 as api
from lgcheckpoint.v1 import thread_service_pb2 as thread_api

from checkpoint_server.auth import (
    REQUIRED_ROLES,
    Credentials,
    PermissionDenied,
    Role,
    Unauthenticated,
    authorize,
    load_policy,
)
from checkpoint_server.auth.exposure import check_exposure, is_loopback
from checkpoint_server.config import ConfigurationError
from tests.security import new_token, write_auth_file


def test_every_rpc_has_a_required_role_and_no_role_names_a_missing_rpc() -> None:
    methods = {
        method.full_name: method
        for module, name in ((api, "CheckpointService"), (thread_api, "ThreadService"))
        for method in module.DESCRIPTOR.services_by_name[name].methods
    }
    assert set(methods) == set(REQUIRED_ROLES)
    for method in methods.values():  # every request names the namespace the check needs
        assert "namespace" in method.input_type.fields_by_name, method.full_name


def test_roles_include_the_lower_ones_and_a_wildcard_covers_every_namespace(
    tmp_path: Path,
) -> None:
    token, everything = new_token(), new_token()
    policy = load_policy(
        write_auth_file(
            tmp_path / "auth.toml",
            {
                "writer": (token, {"a": "write", "b": "read"}),
                "ops": (everything, {"*": "read", "a": "admin"}),
            },
        )
    )
    writer = policy.authenticate(Credentials(token=token))
    authorize(writer, "a", Role.READ)
    authorize(writer, "a", Role.WRITE)
    authorize(writer, "b", Role.READ)
    for namespace, role in (("a", Role.ADMIN), ("b", Role.WRITE), ("c", Role.READ)):
        with pytest.raises(PermissionDenied) as denied:
            authorize(writer, namespace, role)
        assert str(denied.value) == (
            f"token 'writer' lacks the {role.label} role on namespace '{namespace}'"
        )
    ops = policy.authenticate(Credentials(token=everything))
    authorize(ops, "anything", Role.READ)
    authorize(ops, "a", Role.ADMIN)  # the higher of its grant and the wildcard's
    with pytest.raises(PermissionDenied):
        authorize(ops, "anything", Role.WRITE)


def test_tokens_and_certificates_authenticate_only_as_configured(tmp_path: Path) -> None:
    token = new_token()
    policy = load_policy(
        write_auth_file(
            tmp_path / "auth.toml",
            {"t": (token, {"a": "read"})},
            {"worker": ("worker-1.example", {"a": "write"})},
        )
    )
    assert policy.authenticate(Credentials(token=token)).name == "token 't'"
    by_san = Credentials(certificate_names=("other-cn", "worker-1.example"))
    assert policy.authenticate(by_san).name == "certificate 'worker'"
    for credentials in (
        Credentials(),
        Credentials(token=token + "x"),
        Credentials(malformed=True),
        Credentials(certificate_names=("stranger",)),
        # A bad token is refused even alongside a good certificate.
        Credentials(token=new_token(), certificate_names=("worker-1.example",)),
    ):
        with pytest.raises(Unauthenticated):
            policy.authenticate(credentials)


def test_the_file_stores_only_hashes(tmp_path: Path) -> None:
    token = new_token()
    text = write_auth_file(tmp_path / "auth.toml", {"t": (token, {"a": "read"})}).read_text()
    assert token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text


def test_hash_token_prints_what_the_file_stores() -> None:
    token = new_token()
    result = subprocess.run(
        [sys.executable, "-m", "checkpoint_server", "hash-token"],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == hashlib.sha256(token.encode()).hexdigest()
    assert token not in result.stdout + result.stderr


def _security_blocks(language: str) -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_policy_file_means_what_it_says(tmp_path: Path) -> None:
    (example,) = _security_blocks("toml")
    (tmp_path / "auth.toml").write_text(example)
    policy = load_policy(tmp_path / "auth.toml")
    grants = {identity.name: dict(identity.grants) for _, identity in policy.tokens}
    assert grants == {
        "token 'dashboard'": {"team-a": Role.READ, "team-b": Role.READ},
        "token 'ops'": {"*": Role.ADMIN},
    }
    worker = policy.authenticate(Credentials(certificate_names=("worker.team-a.internal",)))
    authorize(worker, "team-a", Role.WRITE)


def test_the_readme_token_commands_make_a_token_and_its_hash(tmp_path: Path) -> None:
    making = _security_blocks("sh")[0]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-euc", making],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = (tmp_path / "dashboard.token").read_text().strip()
    assert len(token) >= 40
    assert result.stdout.strip() == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.0.0.2:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/checkpoints.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.1.2.3:50051", False),
        ("checkpoints.internal:50051", False),
    ],
)
def test_only_loopback_addresses_may_go_without_auth(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback
    if loopback:
        check_exposure(listen, auth=False, tls=False, insecure_no_auth=False)
    else:
        with pytest.raises(ConfigurationError, match="--insecure-no-auth"):
            check_exposure(listen, auth=False, tls=False, insecure_no_auth=False)
        check_exposure(listen, auth=False, tls=False, insecure_no_auth=True)
        check_exposure(listen, auth=True, tls=True, insecure_no_auth=False)
