"""What one saver's run produced."""

from __future__ import annotations

from dataclasses import dataclass

from bench.backends import SaverSpec, Storage
from bench.graph import GraphResult
from bench.ops import HistoryResult, OperationLatencies


@dataclass(frozen=True)
class SaverResult:
    """Every measurement of one saver."""

    spec: SaverSpec
    graph_serial: GraphResult
    graph_concurrent: GraphResult
    storage: Storage
    operations: OperationLatencies
    history: HistoryResult
    seconds: float
