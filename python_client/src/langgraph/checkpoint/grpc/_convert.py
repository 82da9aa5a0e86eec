"""LangGraph objects to requests and responses to LangGraph objects; no I/O.

Written once and shared by the sync and async halves of ``GrpcSaver``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from lgcheckpoint.v1 import checkpoint_pb2 as pb
from lgcheckpoint.v1 import checkpoint_service_pb2 as api

PRUNE_STRATEGIES = {
    "keep_latest": pb.PRUNE_STRATEGY_KEEP_LATEST,
    "delete": pb.PRUNE_STRATEGY_DELETE,
}
# Checkpoints per ListCheckpoints page when reading a whole listing: large pages amortize the
# round trip, and the server stops a page early if it would outgrow the message limit.
_LIST_PAGE = 500
_SENT_APART = frozenset({"channel_values", "channel_versions"})
# The most thread or run IDs one PruneThreads or DeleteForRuns takes: more go in several calls.
MAX_IDS = 1000
# LangGraph records its delta channels' progress under this metadata key.
_DELTA_COUNTERS = "counters_since_delta_snapshot"


class Mapper:
    """Builds requests and reads responses with one serializer and one namespace."""

    def __init__(self, serde: SerializerProtocol, namespace: str) -> None:
        """Uses ``serde`` for every value and ``namespace`` for every request."""
        self.serde = serde
        self.namespace = namespace

    def _payload(self, value: Any) -> pb.Payload:
        type_, data = self.serde.dumps_typed(value)
        return pb.Payload(type=type_, data=data)

    def _load(self, payload: pb.Payload) -> Any:
        return self.serde.loads_typed((payload.type, payload.data))

    def put_checkpoint(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[api.PutCheckpointRequest, RunnableConfig]:
        """The request storing a checkpoint, and the config that points at it."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        values = checkpoint["channel_values"]
        # Values travel one by one and versions in the clear (the server needs them to find
        # the values), so the serialized body carries neither.
        body = {k: v for k, v in checkpoint.items() if k not in _SENT_APART}
        stored_metadata = cast(
            dict[str, Any], get_serializable_checkpoint_metadata(config, metadata)
        )
        request = api.PutCheckpointRequest(
            namespace=self.namespace,
            thread_id=thread_id,
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint["id"],
            parent_checkpoint_id=configurable.get("checkpoint_id") or "",
            checkpoint=self._payload(body),
            metadata_json=json.dumps(stored_metadata, separators=(",", ":")).encode(),
            channel_versions={k: str(v) for k, v in checkpoint["channel_versions"].items()},
            new_values=[
                pb.ChannelValue(channel=k, version=str(v), value=self._payload(values[k]))
                for k, v in new_versions.items()
                if k in values
            ],
            run_id=str(stored_metadata.get("run_id") or ""),
            delta_channels=sorted(stored_metadata.get(_DELTA_COUNTERS) or ()),
        )
        next_config: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return request, next_config

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> api.PutWritesRequest:
        """The request storing a task's writes; special channels get their negative index."""
        configurable = config["configurable"]
        return api.PutWritesRequest(
            namespace=self.namespace,
            thread_id=str(configurable["thread_id"]),
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            checkpoint_id=configurable["checkpoint_id"],
            writes=[
                pb.PendingWrite(
                    task_id=task_id,
                    task_path=task_path,
                    idx=WRITES_IDX_MAP.get(channel, idx),
                    channel=channel,
                    value=self._payload(value),
                )
                for idx, (channel, value) in enumerate(writes)
            ],
        )

    def get_checkpoint(self, config: RunnableConfig) -> api.GetCheckpointRequest:
        """The request reading the checkpoint ``config`` points at (or the latest)."""
        configurable = config["configurable"]
        return api.GetCheckpointRequest(
            namespace=self.namespace,
            thread_id=str(configurable["thread_id"]),
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            checkpoint_id=get_checkpoint_id(config) or "",
        )

    def list_checkpoints(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        page_size: int,
    ) -> api.ListCheckpointsRequest:
        """The request for the first page of a listing."""
        request = api.ListCheckpointsRequest(
            namespace=self.namespace,
            metadata_filter_json=json.dumps(filter).encode() if filter else b"",
            before_checkpoint_id=(get_checkpoint_id(before) or "") if before else "",
            page_size=page_size,
        )
        if config is not None:
            configurable = config["configurable"]
            request.thread_id = str(configurable["thread_id"])
            if configurable.get("checkpoint_ns") is not None:
                request.checkpoint_ns = configurable["checkpoint_ns"]
            request.checkpoint_id = get_checkpoint_id(config) or ""
        return request

    def checkpoint_tuple(self, message: pb.Checkpoint) -> CheckpointTuple:
        """A stored checkpoint as LangGraph's tuple."""
        checkpoint = cast(Checkpoint, self._load(message.checkpoint))
        checkpoint["channel_versions"] = {
            channel: _version(version) for channel, version in message.channel_versions.items()
        }
        checkpoint["channel_values"] = {
            v.channel: self._load(v.value) for v in message.channel_values
        }
        configurable = {
            "thread_id": message.thread_id,
            "checkpoint_ns": message.checkpoint_ns,
        }
        parent_config: RunnableConfig | None = None
        if message.parent_checkpoint_id:
            parent_config = {
                "configurable": {**configurable, "checkpoint_id": message.parent_checkpoint_id}
            }
        return CheckpointTuple(
            config={"configurable": {**configurable, "checkpoint_id": message.checkpoint_id}},
            checkpoint=checkpoint,
            metadata=cast(CheckpointMetadata, json.loads(message.metadata_json or b"{}")),
            parent_config=parent_config,
            pending_writes=self._pending_writes(message.pending_writes),
        )

    def _pending_writes(self, writes: Sequence[pb.PendingWrite]) -> list[PendingWrite]:
        return [(w.task_id, w.channel, self._load(w.value)) for w in writes]

    def prune(self, thread_ids: Sequence[str], strategy: str) -> list[api.PruneThreadsRequest]:
        """The requests pruning threads, each naming at most ``MAX_IDS`` of them.

        Raises:
            TypeError: ``thread_ids`` is a single string.
            ValueError: ``strategy`` is unknown.

        """
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(f"Unknown prune strategy: {strategy!r}")
        return [
            api.PruneThreadsRequest(
                namespace=self.namespace, thread_ids=chunk, strategy=PRUNE_STRATEGIES[strategy]
            )
            for chunk in _chunks([str(t) for t in thread_ids])
        ]

    def delete_for_runs(self, run_ids: Sequence[str]) -> list[api.DeleteForRunsRequest]:
        """The requests deleting the runs' checkpoints, each naming at most ``MAX_IDS`` runs.

        Raises:
            TypeError: ``run_ids`` is a single string.

        """
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run IDs, not a str")
        return [
            api.DeleteForRunsRequest(namespace=self.namespace, run_ids=chunk)
            for chunk in _chunks([str(r) for r in run_ids])
        ]

    def delta_channel_history(
        self, config: RunnableConfig, channels: Sequence[str]
    ) -> api.GetDeltaChannelHistoryRequest:
        """The request walking the parent chain for ``channels``."""
        configurable = config["configurable"]
        return api.GetDeltaChannelHistoryRequest(
            namespace=self.namespace,
            thread_id=str(configurable["thread_id"]),
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            checkpoint_id=get_checkpoint_id(config) or "",
            channels=list(channels),
        )

    def delta_histories(
        self, response: api.GetDeltaChannelHistoryResponse
    ) -> Mapping[str, DeltaChannelHistory]:
        """The response as LangGraph's per-channel mapping."""
        result: dict[str, DeltaChannelHistory] = {}
        for history in response.histories:
            entry: DeltaChannelHistory = {"writes": self._pending_writes(history.writes)}
            if history.HasField("seed"):
                entry["seed"] = self._load(history.seed)
            result[history.channel] = entry
        return result


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + MAX_IDS] for start in range(0, len(ids), MAX_IDS)]


def _version(version: str) -> str | int:
    """A channel version as LangGraph gave it: integers travel as their decimal digits."""
    return int(version) if version.isdigit() else version


def page_size(limit: int | None) -> int:
    """The page size to list ``limit`` checkpoints with (None: all)."""
    return _LIST_PAGE if limit is None else max(1, min(limit, _LIST_PAGE))
