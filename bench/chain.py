"""Checkpoints written straight to a saver, super-step by super-step, as LangGraph's loop does.

Each step stores a checkpoint whose parent is the previous one, with values only for the
channels that changed (``new_versions``), then the pending writes of the step's task against
it. The state is realistic but bounded: a sliding window of messages that changes every step,
a step counter, and a status that changes every 100 steps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base.id import uuid6

MESSAGE_WINDOW = 8
_TASK_PATH = "~__pregel_pull, agent"
_TEXT = (
    "The assistant keeps a short running summary of the conversation, cites the tool results "
    "it relied on and ends with a question for the user. "
)


@dataclass(frozen=True)
class Step:
    """Everything one super-step stores: a checkpoint, then its task's writes."""

    config: RunnableConfig
    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    new_versions: dict[str, str | int | float]
    task_id: str
    writes: list[tuple[str, Any]]


def _message(index: int) -> AnyMessage:
    if index % 2:
        return AIMessage(f"Answer {index}. " + _TEXT * 2, id=f"msg-{index}")
    return HumanMessage(f"Question {index}: what changed since the last step?", id=f"msg-{index}")


class ChainBuilder:
    """Produces the steps of one thread in order; storing them is up to the caller."""

    def __init__(self, saver: BaseCheckpointSaver[Any], thread_id: str) -> None:
        """Builds steps for ``thread_id`` with ``saver``'s channel versions."""
        self._saver = saver
        self.thread_id = thread_id
        self._step = 0
        self._parent_id: str | None = None
        self._versions: dict[str, str | int | float] = {}
        self._messages: list[AnyMessage] = []

    def _bump(self, channel: str) -> str | int | float:
        version: str | int | float = self._saver.get_next_version(self._versions.get(channel), None)
        self._versions[channel] = version
        return version

    def next_step(self) -> Step:
        """The next super-step of the thread."""
        step = self._step
        self._step += 1
        self._messages = [*self._messages, _message(step)][-MESSAGE_WINDOW:]
        changed = ["messages", "step"]
        if step % 100 == 0:
            changed.append("status")
        new_versions = {channel: self._bump(channel) for channel in changed}
        values: dict[str, Any] = {
            "messages": self._messages,
            "step": step,
            "status": f"phase-{step // 100}",
        }
        checkpoint: Checkpoint = {
            "v": 4,
            "id": str(uuid6(clock_seq=step)),
            "ts": datetime.now(UTC).isoformat(),
            "channel_values": values,
            "channel_versions": dict(self._versions),
            "versions_seen": {"agent": {"messages": self._versions["messages"]}},
            "updated_channels": changed,
        }
        configurable: dict[str, Any] = {"thread_id": self.thread_id, "checkpoint_ns": ""}
        if self._parent_id is not None:
            configurable["checkpoint_id"] = self._parent_id
        self._parent_id = checkpoint["id"]
        writes: list[tuple[str, Any]] = [("messages", [_message(step + 1)]), ("step", step + 1)]
        return Step(
            config={"configurable": configurable},
            checkpoint=checkpoint,
            metadata={"source": "loop", "step": step, "parents": {}},
            new_versions=new_versions,
            task_id=str(uuid6(clock_seq=step)),
            writes=writes,
        )


async def put_checkpoint(saver: BaseCheckpointSaver[Any], step: Step) -> RunnableConfig:
    """Stores the step's checkpoint; returns the config pointing at it."""
    return await saver.aput(step.config, step.checkpoint, step.metadata, step.new_versions)


async def put_writes(saver: BaseCheckpointSaver[Any], config: RunnableConfig, step: Step) -> None:
    """Stores the step's task writes against the checkpoint ``config`` points at."""
    await saver.aput_writes(config, step.writes, step.task_id, _TASK_PATH)


async def build_thread(
    saver: BaseCheckpointSaver[Any], thread_id: str, checkpoints: int, *, window: int = 8
) -> None:
    """Writes ``checkpoints`` steps to a new thread, ``window`` steps in flight at a time.

    Steps are independent rows, so overlapping them only speeds up the setup; the stored
    result is the same parent chain a sequential run writes.
    """
    builder = ChainBuilder(saver, thread_id)

    async def store(step: Step) -> None:
        await put_writes(saver, await put_checkpoint(saver, step), step)

    remaining = checkpoints
    while remaining > 0:
        batch = [builder.next_step() for _ in range(min(window, remaining))]
        remaining -= len(batch)
        await asyncio.gather(*(store(step) for step in batch))
