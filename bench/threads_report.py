"""The Markdown report of ``bench.threads``: search latency, event latency and the targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench.catalog import QueryResult, SeedResult
from bench.events import EventResult
from bench.report import Target

SEARCH_TARGET_MS = 20.0
EVENT_TARGET_MS = 50.0
_MISSING = "-"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f}"


@dataclass(frozen=True)
class GinPending:
    """The pending list of a GIN index (``pgstatginindex``): entries not yet merged."""

    pages: int
    tuples: int


@dataclass(frozen=True)
class ThreadsResults:
    """Everything one run measured; parts not run are None or empty."""

    seed: SeedResult | None
    searches: list[QueryResult]
    events: list[EventResult]
    vacuumed: list[QueryResult] = field(default_factory=list)
    pending: Mapping[str, GinPending | None] = field(default_factory=dict)
    autovacuum: str = "?"
    open_transactions: int | None = None


def _seed_lines(seed: SeedResult) -> list[str]:
    statuses = ", ".join(f"{name} {count:,}" for name, count in seed.statuses.items())
    return [
        f"- CreateThread: {seed.threads:,} threads in {seed.create_seconds:.1f} s "
        f"({seed.creates_per_second:,.0f}/s, {seed.concurrency} calls in flight, two servers).",
        f"- aput (+ aput_writes for interrupt/error) on {seed.checkpointed:,} of them in "
        f"{seed.checkpoint_seconds:.1f} s. Statuses by CountThreads: {statuses}.",
    ]


def _search_table(searches: Sequence[QueryResult], vacuumed: Sequence[QueryResult]) -> list[str]:
    after = {q.label: q for q in vacuumed}
    lines = [
        "| Call | Client call | Matching threads | Returned | Calls | p50 ms | p99 ms | "
        "p50 ms after VACUUM | p99 ms after VACUUM |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in searches:
        returned = _MISSING if q.returned is None else str(q.returned)
        v = after.get(q.label)
        tail = (_MISSING, _MISSING) if v is None else (_ms(v.latency.p50), _ms(v.latency.p99))
        lines.append(
            f"| {q.label} | `{q.call}` | {q.matches:,} | {returned} | {q.latency.count} | "
            f"{_ms(q.latency.p50)} | {_ms(q.latency.p99)} | {tail[0]} | {tail[1]} |"
        )
    return lines


def _event_table(events: Sequence[EventResult]) -> list[str]:
    lines = [
        "| Setup | Writers | Puts | Events received | aput p50 ms | aput p99 ms | "
        "Put→event p50 ms | Put→event p99 ms | After aput returned p50 ms | "
        "After aput returned p99 ms | Puts/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in events:
        lines.append(
            f"| {e.label} | {e.writers} | {e.puts:,} | {e.received:,} | {_ms(e.put.p50)} | "
            f"{_ms(e.put.p99)} | {_ms(e.event.p50)} | {_ms(e.event.p99)} | "
            f"{_ms(e.delivery.p50)} | {_ms(e.delivery.p99)} | {e.puts / e.seconds:,.0f} |"
        )
    return lines


def _pending_lines(pending: Mapping[str, GinPending | None]) -> list[str]:
    known = {when: p for when, p in pending.items() if p is not None}
    if not known:
        return []
    sizes = "; ".join(
        f"{when}: {p.pages:,} pages, {p.tuples:,} entries" for when, p in known.items()
    )
    return [
        f"GIN pending list of `ix_threads_metadata` (pgstattuple): {sizes}. Metadata "
        "searches scan the whole pending list on every call. A manual ANALYZE does not "
        "empty it (only VACUUM, autovacuum's analyze, `gin_clean_pending_list()` or "
        "reaching `gin_pending_list_limit` do)."
    ]


def targets(results: ThreadsResults) -> list[Target]:
    """The targets: every search's p50 under 20 ms, one writer's put-to-event p50 under 50 ms."""
    found: list[Target] = []
    for q in results.searches:
        if q.returned is None:
            continue
        found.append(
            Target(
                f"SearchThreads p50 ms: {q.label}",
                f"< {SEARCH_TARGET_MS:.0f}",
                q.latency.p50 * 1000,
                lambda v: v < SEARCH_TARGET_MS,
            )
        )
    # The goal is for one writer; runs with several writers show behaviour under load.
    for e in results.events:
        if e.writers != 1:
            continue
        found.append(
            Target(
                f"Put→event p50 ms: {e.label}, 1 writer",
                f"< {EVENT_TARGET_MS:.0f}",
                e.event.p50 * 1000,
                lambda v: v < EVENT_TARGET_MS,
            )
        )
    return found


def render(results: ThreadsResults, *, title: str, settings: Sequence[str]) -> str:
    """The whole report as Markdown."""
    lines = [f"# {title}", "", *(f"- {s}" for s in settings), ""]
    if results.seed is not None:
        lines += ["## Thread search at scale (PostgreSQL)", "", *_seed_lines(results.seed), ""]
    if results.searches:
        lines += _search_table(results.searches, results.vacuumed)
        lines += [
            "",
            "Each call: warm-up calls first, then timed calls one at a time through "
            "`saver.athreads` (client time, gRPC round trip included). Matching threads: "
            "CountThreads with the same filter. The first p50/p99 pair is after ANALYZE "
            f"only (autovacuum={results.autovacuum}), which the targets use; the second after "
            "`VACUUM threads`, as autovacuum would eventually leave the table.",
            "",
            *_pending_lines(results.pending),
            "",
        ]
    if results.events:
        lines += ["## Put-to-event latency", "", *_event_table(results.events), ""]
        lines += [
            "Put→event: from just before `aput` to the watcher receiving the matching "
            "`checkpoint_added` event (same thread and checkpoint ID); after aput returned: "
            "the part of it after the `aput` call returned. Writers do not wait for their "
            "events before their next put; each put is on a new thread.",
            "",
        ]
        if results.open_transactions is not None:
            lines += [
                "Transactions holding a transaction ID for over 1 s anywhere on the "
                f"PostgreSQL cluster when the event runs started: {results.open_transactions} "
                "(a watcher holds back every event of a transaction younger than the oldest "
                "of them, whatever its database, until it ends).",
                "",
            ]
    lines += [
        "## Targets",
        "",
        "| Target | Goal | Measured | Result |",
        "|---|---|---:|---|",
        *(t.line() for t in targets(results)),
        "",
        "Counts have no target; runs with several writers show behaviour under load and "
        "have none either. The SQLite row holds SQLite to the PostgreSQL goal.",
        "",
    ]
    return "\n".join(lines)
