"""The README's usage section runs as written, against a real server."""

import re
from pathlib import Path

from tests.conftest import ServerProcess

README = Path(__file__).parent.parent / "README.md"


def test_usage_snippets_run_in_order(server: ServerProcess) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 5
    scope: dict[str, object] = {"__name__": "readme"}
    for index, block in enumerate(blocks, 1):
        code = block.replace("grpc://localhost:50051", f"grpc://{server.target}")
        exec(compile(code, f"README.md python block {index}", "exec"), scope)  # noqa: S102
