"""The TypeScript client's tests (typescript_client/test) against real servers on both databases.

Starts a server on SQLite and one on a fresh PostgreSQL database, runs ``vitest`` once with
their addresses in ``LGCP_SERVERS``, prints vitest's totals as a plain ``N passed, N failed``
line, and fails unless every TypeScript test passed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, fresh_sqlite_url, postgres_database

CLIENT = Path(__file__).parent.parent / "typescript_client"


@pytest.fixture(scope="module")
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """A server on a new SQLite file and one on a new PostgreSQL database."""
    request.getfixturevalue("postgres_url")  # skips or fails as the session decided
    with postgres_database("lgcp_ts") as postgres:
        running = {
            "sqlite": ServerProcess.start(fresh_sqlite_url(tmp_path_factory.mktemp("ts"))),
            "postgres": ServerProcess.start(postgres),
        }
        try:
            yield running
        finally:
            for server in running.values():
                assert server.stop() == 0, "".join(server.log)


@dataclass(frozen=True)
class VitestRun:
    """What a vitest run reported."""

    passed: int
    failed: int
    failed_files: int
    succeeded: bool
    output: str


def run_vitest(servers: dict[str, ServerProcess], report: Path, *files: str) -> VitestRun:
    """Runs vitest on ``files`` (every test file when none) against ``servers``."""
    npx = shutil.which("npx")
    assert npx is not None, "Node.js is required: see the README's TypeScript section"
    assert (CLIENT / "node_modules").is_dir(), "run `make setup` (npm ci in typescript_client)"
    env = {
        **os.environ,
        "LGCP_PYTHON": sys.executable,
        "LGCP_SERVERS": json.dumps(
            {
                name: {"target": server.target, "database_url": server.database_url}
                for name, server in servers.items()
            }
        ),
    }
    command = [npx, "vitest", "run", "--globals", "--reporter=default", "--reporter=json"]
    completed = subprocess.run(
        [*command, f"--outputFile.json={report}", *files],
        cwd=CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = completed.stdout[-20000:] + completed.stderr[-5000:]
    assert report.exists(), output
    totals = json.loads(report.read_text())
    return VitestRun(
        passed=totals["numPassedTests"],
        failed=totals["numFailedTests"],
        failed_files=totals["numFailedTestSuites"],
        succeeded=completed.returncode == 0 and totals["success"],
        output=output,
    )


def test_typescript_client(
    servers: dict[str, ServerProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_vitest(servers, tmp_path / "vitest.json")
    with capsys.disabled():
        print(f"\nTypeScript tests: {run.passed} passed, {run.failed} failed")
    assert run.failed == 0, run.output
    assert run.failed_files == 0, run.output
    assert run.succeeded, run.output
    # The conformance suite alone has over seven hundred cases per database.
    assert run.passed > 1400, run.output


def _typescript_section() -> str:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    start = text.index("\n## TypeScript\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_typescript_section_runs_as_written(
    servers: dict[str, ServerProcess], tmp_path: Path
) -> None:
    section = _typescript_section()
    target = f"grpc://{servers['sqlite'].target}"
    npm = shutil.which("npm")
    npx = shutil.which("npx")
    assert npm is not None
    assert npx is not None
    # The install block: the package builds and packs into the tarball the README names.
    subprocess.run(
        [npm, "pack", "--silent", "--pack-destination", str(tmp_path)],
        cwd=CLIENT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (tmp_path / "lgcheckpoint-langgraph-checkpoint-grpc-0.1.0.tgz").exists()
    # The Python half writes the thread the TypeScript half continues.
    scope: dict[str, object] = {"__name__": "readme_typescript"}
    for index, block in enumerate(re.findall(r"```python\n(.*?)```", section, re.DOTALL), 1):
        code = block.replace("grpc://localhost:50051", target)
        exec(compile(code, f"README TypeScript python block {index}", "exec"), scope)  # noqa: S102
    blocks = re.findall(r"```ts\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 3
    # Inside the package, its own name resolves to the build npm pack just made (dist/).
    module = CLIENT / "test" / ".readme.generated.mts"
    module.write_text("\n".join(blocks).replace("grpc://localhost:50051", target))
    try:
        completed = subprocess.run(
            [npx, "tsx", str(module)],
            cwd=CLIENT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        module.unlink()
    assert completed.returncode == 0, completed.stdout + completed.stderr
