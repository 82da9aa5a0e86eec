"""The Markdown report: absolute figures, GrpcSaver/official ratios, and the team's targets."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial

from bench.backends import GRPC_POSTGRES, GRPC_SQLITE, PAIRS, POSTGRES, SQLITE, SaverSpec
from bench.paired import PairedResult, Trial
from bench.paired import render as paired_table
from bench.results import SaverResult
from bench.stats import median

_MISSING = "-"


class Ratio(Enum):
    """How the ratio column of a row is computed."""

    NONE = "none"
    GRPC_OVER_OFFICIAL = "grpc/official"
    OFFICIAL_OVER_GRPC = "official/grpc"


@dataclass(frozen=True)
class Row:
    """One metric of the main table."""

    label: str
    value: Callable[[SaverResult], float | None]
    digits: int
    ratio: Ratio = Ratio.GRPC_OVER_OFFICIAL


def _ms(seconds: float) -> float:
    return seconds * 1000


def _rows(history: int) -> list[Row]:
    return [
        Row("aput p50 ms", lambda r: _ms(r.operations.aput.p50), 2),
        Row("aput p99 ms", lambda r: _ms(r.operations.aput.p99), 2),
        Row("aput_writes p50 ms", lambda r: _ms(r.operations.aput_writes.p50), 2),
        Row("aput_writes p99 ms", lambda r: _ms(r.operations.aput_writes.p99), 2),
        Row("aget_tuple latest p50 ms", lambda r: _ms(r.operations.aget_tuple.p50), 2),
        Row("aget_tuple latest p99 ms", lambda r: _ms(r.operations.aget_tuple.p99), 2),
        Row("alist limit=10 p50 ms", lambda r: _ms(r.operations.alist10.p50), 2),
        Row("alist limit=10 p99 ms", lambda r: _ms(r.operations.alist10.p99), 2),
        Row("get latest p50 ms @ 10 ckpts", lambda r: _ms(r.history.latest_short.p50), 2),
        Row(f"get latest p50 ms @ {history:,} ckpts", lambda r: _ms(r.history.latest_long.p50), 2),
        Row(f"get latest {history:,} ÷ 10", lambda r: r.history.latest_ratio, 2, Ratio.NONE),
        Row(
            f"alist whole {history:,}-ckpt history, s (ratio = speed-up)",
            lambda r: r.history.read_seconds,
            3,
            Ratio.OFFICIAL_OVER_GRPC,
        ),
        Row("Bytes per checkpoint (graph run)", lambda r: r.storage.per_checkpoint, 0),
        Row(
            "Event log bytes per checkpoint (kept for its retention)",
            lambda r: r.storage.event_log_per_checkpoint,
            0,
            Ratio.NONE,
        ),
        Row("Checkpoints stored (graph run)", lambda r: r.storage.checkpoints, 0, Ratio.NONE),
    ]


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _ratio(row: Row, grpc: SaverResult | None, official: SaverResult | None) -> float | None:
    if row.ratio is Ratio.NONE or grpc is None or official is None:
        return None
    grpc_value, official_value = row.value(grpc), row.value(official)
    if grpc_value is None or official_value is None:
        return None
    if row.ratio is Ratio.GRPC_OVER_OFFICIAL:
        return grpc_value / official_value if official_value else None
    return official_value / grpc_value if grpc_value else None


def _cell(result: SaverResult | None, row: Row) -> str:
    value = None if result is None else row.value(result)
    return _MISSING if value is None else _number(value, row.digits)


def _ratio_cell(value: float | None) -> str:
    return _MISSING if value is None else f"{value:.2f}x"


def main_table(results: Mapping[str, SaverResult], *, history: int) -> list[str]:
    """The table of absolute figures, with a GrpcSaver/official ratio per database."""
    header = ["Metric"]
    for grpc_spec, official_spec in PAIRS:
        header += [grpc_spec.label, official_spec.label, f"Grpc/official ({grpc_spec.database})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for row in _rows(history):
        cells = [row.label]
        for grpc_spec, official_spec in PAIRS:
            grpc, official = results.get(grpc_spec.key), results.get(official_spec.key)
            cells += [
                _cell(grpc, row),
                _cell(official, row),
                _ratio_cell(_ratio(row, grpc, official)),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


@dataclass(frozen=True)
class Target:
    """A goal the team set, checked against the figures."""

    label: str
    goal: str
    measured: float | None
    met: Callable[[float], bool]

    def line(self) -> str:
        """The Markdown row of the target."""
        if self.measured is None:
            return f"| {self.label} | {self.goal} | {_MISSING} | NOT RUN |"
        verdict = "PASS" if self.met(self.measured) else "MISS"
        return f"| {self.label} | {self.goal} | {self.measured:.2f} | {verdict} |"


def _pair_ratio(
    results: Mapping[str, SaverResult],
    value: Callable[[SaverResult], float],
    *,
    inverse: bool = False,
    pair: tuple[SaverSpec, SaverSpec] = (GRPC_POSTGRES, POSTGRES),
) -> float | None:
    grpc, official = results.get(pair[0].key), results.get(pair[1].key)
    if grpc is None or official is None:
        return None
    if inverse:
        return value(official) / value(grpc)
    return value(grpc) / value(official)


def _own(results: Mapping[str, SaverResult], spec: SaverSpec) -> float | None:
    result = results.get(spec.key)
    return None if result is None else result.history.latest_ratio


def _paired(paired: Mapping[tuple[str, int], PairedResult], key: str, c: int) -> float | None:
    result = paired.get((key, c))
    return None if result is None else median(result.ratios)


def _budget(
    paired: Mapping[tuple[str, int], PairedResult],
    key: str,
    value: Callable[[Trial], float | None],
) -> float | None:
    """The median over rounds of ``value`` of GrpcSaver's trials at one thread."""
    result = paired.get((key, 1))
    values = [] if result is None else [v for t in result.grpc if (v := value(t)) is not None]
    return median(values) if values else None


def _budgets(paired: Mapping[tuple[str, int], PairedResult]) -> list[Target]:
    """CPU and calls per super-step at one thread, where a call's cost shows most."""
    budgets = [
        Target(
            f"{grpc.label} server CPU ms per step, c=1, median of rounds",
            "≤ 3.00",
            _budget(paired, grpc.key, lambda t: t.graph.server_cpu_ms_per_step),
            partial(operator.ge, 3.0),
        )
        for grpc, _ in PAIRS
    ]
    budgets += [
        Target(
            "GrpcSaver (PostgreSQL) PostgreSQL CPU ms per step, c=1, median of rounds",
            "≤ 1.20",
            _budget(paired, GRPC_POSTGRES.key, lambda t: t.postgres_ms_per_step),
            partial(operator.ge, 1.2),
        ),
    ]
    budgets += [
        Target(
            f"{grpc.label} RPCs per step, c=1, median of rounds",
            "≤ 2.00",
            _budget(paired, grpc.key, lambda t: t.rpcs_per_step),
            partial(operator.ge, 2.0),
        )
        for grpc, _ in PAIRS
    ]
    return budgets


def targets(
    results: Mapping[str, SaverResult],
    paired: Mapping[tuple[str, int], PairedResult],
    *,
    concurrency: int,
    history: int,
) -> list[Target]:
    """The team's targets for GrpcSaver, measured."""
    c = concurrency
    throughput = [
        Target(
            f"{grpc.label} ÷ {official.label} graph steps/s, c={at}, median of rounds",
            f"≥ {goal:.2f}x",
            _paired(paired, grpc.key, at),
            partial(operator.le, goal),
        )
        for grpc, official in PAIRS
        for at, goal in ((1, 1.0), (c, 1.5))
    ]
    return [
        *throughput,
        *_budgets(paired),
        Target(
            f"GrpcSaver/PG get latest p50 @ {history:,} ÷ @ 10",
            "≤ 1.50",
            _own(results, GRPC_POSTGRES),
            lambda v: v <= 1.5,
        ),
        Target(
            f"GrpcSaver/SQLite get latest p50 @ {history:,} ÷ @ 10",
            "≤ 1.50",
            _own(results, GRPC_SQLITE),
            lambda v: v <= 1.5,
        ),
        Target(
            f"Reading {history:,}-ckpt history: speed-up over AsyncPostgresSaver.alist",
            "≥ 3.00x",
            _pair_ratio(results, lambda r: r.history.read_seconds, inverse=True),
            lambda v: v >= 3.0,
        ),
        Target(
            "GrpcSaver/PG ÷ AsyncPostgresSaver bytes per checkpoint, event log included",
            "≤ 1.00x",
            _pair_ratio(results, lambda r: r.storage.total_per_checkpoint),
            lambda v: v <= 1.0,
        ),
        Target(
            "GrpcSaver/SQLite ÷ AsyncSqliteSaver bytes per checkpoint",
            "≤ 1.00x",
            _pair_ratio(
                results, lambda r: r.storage.total_per_checkpoint, pair=(GRPC_SQLITE, SQLITE)
            ),
            lambda v: v <= 1.0,
        ),
    ]


def render(
    results: Mapping[str, SaverResult],
    paired: Mapping[tuple[str, int], PairedResult],
    *,
    title: str,
    settings: Sequence[str],
    concurrency: int,
    history: int,
) -> str:
    """The whole report as Markdown."""
    lines = [f"# {title}", "", *(f"- {s}" for s in settings), ""]
    lines += ["## Graph workload, interleaved", ""]
    lines += paired_table(dict(paired), {spec.key: spec.label for spec, _ in PAIRS})
    lines += [
        "",
        "Agent CPU is the benchmark process: LangGraph plus GrpcSaver's client, or plus the "
        "official saver and its driver. Server CPU is the checkpoint server process. "
        "PostgreSQL CPU is the backends serving the saver's database.",
        "",
        "## Operations, history and storage (each saver alone)",
        "",
    ]
    lines += main_table(results, history=history)
    lines += [
        "",
        "Ratios are GrpcSaver ÷ official saver on the same database (throughput ↑: above 1 is "
        "better; latency, time and bytes: below 1 is better), except the history read, whose "
        "ratio is the speed-up (official time ÷ GrpcSaver time, above 1 is better). "
        "Benchmark-process CPU covers LangGraph itself plus, for the official savers, the saver "
        "and its database driver; only GrpcSaver has a server process. Database-server CPU "
        "(PostgreSQL) is in neither row.",
        "",
        "## Targets",
        "",
        "| Target | Goal | Measured | Result |",
        "|---|---|---:|---|",
    ]
    lines += [t.line() for t in targets(results, paired, concurrency=concurrency, history=history)]
    timings = ", ".join(f"{r.spec.label} {r.seconds:.0f} s" for r in results.values())
    lines += ["", f"Time per saver: {timings}.", ""]
    return "\n".join(lines)
