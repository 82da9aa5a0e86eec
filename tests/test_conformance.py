"""LangGraph's own conformance suite for savers, through GrpcSaver, on both databases."""

import uuid
from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from langgraph.checkpoint.grpc import GrpcSaver
from tests.conftest import ServerProcess


async def test_all_capabilities_pass(server: ServerProcess) -> None:
    @checkpointer_test(name=f"GrpcSaver-{uuid.uuid4().hex[:6]}")
    async def grpc_saver() -> AsyncIterator[GrpcSaver]:
        # A namespace per capability suite, as the suite expects a fresh saver each time.
        async with GrpcSaver.from_conn_string(
            f"grpc://{server.target}", namespace=f"conformance-{uuid.uuid4().hex[:8]}"
        ) as saver:
            yield saver

    report = await validate(grpc_saver)

    detected = {name for name, result in report.results.items() if result.detected}
    assert detected == {c.value for c in ALL_CAPABILITIES}
    failures = [f for result in report.results.values() for f in result.failures]
    assert failures == []
    passed = sum(result.tests_passed for result in report.results.values())
    assert passed == 81
