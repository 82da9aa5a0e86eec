"""The README's usage section runs as written, against a real server."""

import re
from pathlib import Path

from tests.conftest import ServerProcess

README = Path(__file__).parent.parent / "README.md"


def test_usage_snippets_run_in_order_again_and_again(server: ServerProcess) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 5
    for run in (1, 2):  # a reader runs them more than once, against the same server
        scope: dict[str, object] = {"__name__": "readme"}
        for index, block in enumerate(blocks, 1):
            code = block.replace("grpc://localhost:50051", f"grpc://{server.target}")
            name = f"README.md python block {index} (run {run})"
            exec(compile(code, name, "exec"), scope)  # noqa: S102
