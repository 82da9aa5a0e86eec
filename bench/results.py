"""What one saver's run produced."""

from __future__ import annotations

from dataclasses import dataclass

from bench.backends import SaverSpec, Storage
from bench.ops import HistoryResult, OperationLatencies


@dataclass(frozen=True)
class SaverResult:
    """Every measurement of one saver."""

    spec: SaverSpec
    storage: Storage
    operations: OperationLatencies
    history: HistoryResult
    seconds: float
