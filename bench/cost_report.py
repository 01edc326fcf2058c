"""The "Cost per job" section of docs/performance.md, the console table and the progress lines,
from ``bench.cost``'s results (bench/results/cost.json)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, median, run_meta, say
from bench.paired_trees import Tree
from worker.core.masking import mask_url

HEADING = "## Cost per job"
BEFORE = "## Method"  # where the section goes when the page has none yet
# Targets (issue "Cost per job"): reported, never asserted. metric -> (comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "paced_cpu_pct": ("<=", 8.0),
    "paced_p50_ms": ("<=", 5.0),
    "full_10_us_per_job": ("<=", 150.0),
    "full_50_us_per_job": ("<=", 150.0),
    "full_100_us_per_job": ("<=", 150.0),
    "ratio_10": (">=", 0.4),
    "ratio_50": (">=", 0.5),
    "bulk_jobs_per_s": (">=", 100_000.0),
}
SHOWN = {  # what a progress line says of a step
    "paced_cpu_pct": "% core",
    "paced_us_per_job": "µs/job",
    "paced_p50_ms": "p50 ms",
    "bulk_jobs_per_s": "jobs/s",
    "raw_50_qps": "raw C=50 qps",
    "floor_cpu_pct": "floor % core",
}
SHOWN_SUFFIXES = {"_jobs_per_s": "jobs/s", "_us_per_job": "µs/job"}  # of full_<C>_...


def _short(key: str) -> str | None:
    if key in SHOWN:
        return SHOWN[key]
    if key.startswith("full_"):
        return next((v for k, v in SHOWN_SUFFIXES.items() if key.endswith(k)), None)
    return None


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """``[k/N] what  figures  took  elapsed  ETA`` on standard error after every step."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self.begun = self.last = time.monotonic()

    def done(self, what: str, got: dict[str, Any]) -> None:
        self.count += 1
        now = time.monotonic()
        took, self.last = now - self.last, now
        figures = [f"{_short(k)} {_fmt(v)}" for k, v in got.items() if _short(k) is not None]
        left = (self.total - self.count) * (now - self.begun) / self.count
        say(
            f"[{self.count}/{self.total}] {what}  {', '.join(figures)}  {took:.1f}s  "
            f"elapsed {_clock(now - self.begun)}  ETA {_clock(left)}"
        )


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return (
        f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"
    )


def _medians(rounds: Sequence[dict[str, Any]], side: str) -> dict[str, float | None]:
    names = {k for r in rounds for k, v in r.get(side, {}).items() if _number(v)}
    return {k: median(r[side].get(k) for r in rounds if side in r) for k in sorted(names)}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ratios(
    rounds: Sequence[dict[str, Any]], side: str, concurrencies: Sequence[int]
) -> dict[str, float | None]:
    """Per C: the median over rounds of the tree's full-load jobs/s over that round's raw qps."""
    found: dict[str, float | None] = {}
    for c in concurrencies:
        per_round = [
            r[side][f"full_{c}_jobs_per_s"] / r["shared"][f"raw_{c}_qps"]
            for r in rounds
            if r[side].get(f"full_{c}_jobs_per_s") and r["shared"].get(f"raw_{c}_qps")
        ]
        found[f"ratio_{c}"] = median(per_round)
    return found


def data(
    opts: dict[str, Any],
    trees: Sequence[Tree],
    commit: str | None,
    rounds: list[dict[str, Any]],
    started: datetime,
    elapsed: float,
    concurrencies: Sequence[int],
) -> dict[str, Any]:
    """The JSON record: the run, its options, every round and the medians (ratios included)."""
    meta = run_meta(started, elapsed, int(opts["rounds"]), bool(opts["quick"]))
    meta["trees"] = {t.label: {"describe": t.describe, "digest": t.digest} for t in trees}
    meta["against"] = {"rev": opts["against"], "commit": commit} if commit else None
    medians: dict[str, dict[str, float | None]] = {"shared": _medians(rounds, "shared")}
    for tree in trees:
        medians[tree.label] = _medians(rounds, tree.label) | ratios(
            rounds, tree.label, concurrencies
        )
    options = opts | {"output": None if opts["output"] is None else str(opts["output"])}
    options |= {
        "database_url": mask_url(opts["database_url"]),
        "redis_url": mask_url(opts["redis_url"]),
    }
    return {
        "meta": meta,
        "options": options | {"concurrencies": list(concurrencies)},
        "targets": {k: {"compare": c, "bound": b} for k, (c, b) in TARGETS.items()},
        "rounds": rounds,
        "median": medians,
    }


def _rows_of(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, side, metric) of every row, in order."""
    opts = data["options"]
    rate = f"paced {opts['rate']:,.0f} jobs/s"
    rows = [
        ("idle worker, CPU % of a core", "tree", "idle_cpu_pct"),
        (f"{rate}: worker CPU, % of a core", "tree", "paced_cpu_pct"),
        (f"{rate}: worker CPU, µs per job", "tree", "paced_us_per_job"),
        (f"{rate}: p50 enqueue→finish, ms", "tree", "paced_p50_ms"),
        (f"{rate}: p95 enqueue→finish, ms", "tree", "paced_p95_ms"),
    ]
    for c in opts["concurrencies"]:
        rows.append((f"full load C={c}: jobs/s", "tree", f"full_{c}_jobs_per_s"))
        rows.append((f"full load C={c}: worker CPU, µs per job", "tree", f"full_{c}_us_per_job"))
        rows.append((f"full load C={c}: ours / raw pool without reset", "tree", f"ratio_{c}"))
    rows.append((f"bulk enqueue of {opts['bulk']:,} jobs, jobs/s", "tree", "bulk_jobs_per_s"))
    for c in opts["concurrencies"]:
        rows.append((f"raw pool without reset C={c}: queries/s", "shared", f"raw_{c}_qps"))
        rows.append(
            (
                f"raw pool without reset C={c}: client CPU, µs per query",
                "shared",
                f"raw_{c}_us_per_query",
            )
        )
    rows.append((f"floor at {opts['rate']:,.0f}/s: CPU, % of a core", "shared", "floor_cpu_pct"))
    rows.append(("floor: CPU, µs per tick (3 round trips)", "shared", "floor_us_per_tick"))
    return rows


def _target(metric: str, value: float | None) -> tuple[str, str]:
    if metric not in TARGETS:
        return "", ""
    compare, bound = TARGETS[metric]
    sign = "≤" if compare == "<=" else "≥"
    shown = f"{sign} {bound:,.0f}" if bound >= 1 else f"{sign} {bound:g}"
    if value is None:
        return shown, ""
    met = value <= bound if compare == "<=" else value >= bound
    return shown, " (met)" if met else " (missed)"


def table(data: dict[str, Any]) -> list[str]:
    medians = data["median"]
    against = data["meta"]["against"]
    header = ["figure", "target", "this tree"] + (
        [f"REV ({against['rev']})", "this/REV"] if against else []
    )
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for figure, side, metric in _rows_of(data):
        new = medians["new" if side == "tree" else "shared"].get(metric)
        target, met = _target(metric, new)
        cells = [figure, target, f"{_fmt(new)}{met}"]
        if against:
            old = medians["old"].get(metric) if side == "tree" else None
            ratio = f"{new / old:.2f}" if new is not None and old else ""
            cells += [_fmt(old) if side == "tree" else "(shared)", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(data: dict[str, Any]) -> str:
    meta, opts = data["meta"], data["options"]
    load = ", ".join(f"{x:.1f}" for x in meta["load_average"])
    against = meta["against"]
    trees = f"This tree: {meta['trees']['new']['describe']}"
    rounds = f"{meta['rounds']} round(s)"
    if against:
        trees += f"; REV ({against['rev']}): {meta['trees']['old']['describe']}"
        rounds = f"{meta['rounds']} interleaved round(s) (the trees in turn, order alternating)"
    return "\n".join(
        [
            HEADING,
            "",
            (
                f'`make bench-cost` (`python -m bench.cost`; `BENCH_ARGS="--against REV"` adds '
                f"REV's tree to the same run), {meta['date']}, {meta['duration_s']:.0f} s"
                f"{' (quick)' if meta.get('quick') else ''}: figures are medians of {rounds} on a "
                f"shared {meta['cpus']}-core machine (load average {load} at the end of the run); "
                f"targets are reported, never asserted. {trees}."
            ),
            "",
            (
                "Every worker is the tree's own `python -m arq worker.Settings` with METRICS_PORT=0 "
                "and no scheduled jobs (CRON_DEACTIVATE). "
                f"Light load: the worker at its defaults, warmed up, {opts['rate']:,.0f} `get_user` "
                f"jobs a second enqueued one by one for {opts['seconds']:g} s; its CPU (/proc) from "
                "the first enqueue to the last result, and enqueue→finish from the results' "
                "timestamps. Full load: a worker per C (WORKER_MAX_JOBS=C, PG_POOL_MAX_SIZE=min(C, "
                f"20)), warmed up, drains {opts['jobs']:,} jobs queued while the queue was paused; "
                "jobs/s from the first start to the last finish, its CPU from the resume to the "
                "last result. The raw pool is `python -m bench.limit pool-keep` (no reset query, "
                "as this worker by default), once a round, and the ratios are taken round by "
                "round. Bulk enqueue: the tree's own `JobClient.enqueue_many` (every job "
                "validated, duplicate ids refused). The floor is a bare uvloop process that, per "
                "tick, does exactly the three round trips of a job at light load (a Redis `PING`, "
                "one `fetchrow` of the same query, a Redis `PING`) and nothing else: what those "
                "round trips cost with no queue code at all."
            ),
            "",
            *table(data),
            "",
            _held_back(data),
            "",
        ]
    )


def _held_back(data: dict[str, Any]) -> str:
    """What keeps the figures from their targets, in the run's own numbers."""
    new, shared = data["median"]["new"], data["median"]["shared"]
    paced, floor = new.get("paced_us_per_job"), shared.get("floor_us_per_tick")
    raw = shared.get("raw_50_us_per_query")
    full = new.get("full_50_us_per_job")
    light = (
        f"At light load a job costs the worker {paced / floor:.1f} times the floor "
        f"({_fmt(paced)} against {_fmt(floor)} µs)"
        if paced and floor
        else "At light load"
    )
    heavy = (
        f"; at full load (C=50) {_fmt(full)} µs per job against the raw pool's {_fmt(raw)} µs "
        f"per query, {_fmt(full - raw)} µs of Python per job beyond the query"
        if full and raw
        else ""
    )
    return (
        f"**What holds it back.** {light}{heavy}. At light load every job is three replies "
        "that each wake the process: the claim's (the wait for a wake-up and the claim are one "
        "pipelined round), its query's, and its outcome's, which goes out in the next round, "
        "ahead of that round's wait (two writes, three replies). On this virtual "
        "machine a wake-up and a write to a peer on loopback cost tens of microseconds each in "
        "the kernel, and the Python that runs after each wake-up runs on cold caches; the floor, "
        "which does only those three round trips, is already near the 8 % target at 200/s. At "
        "full load the rounds are shared by several jobs each, "
        "and what is left is Python per job, spread thin: the job's task and its coroutines "
        "(runner, policy, job, pooled connection), three timeouts (the job's deadline, the "
        "acquire's, asyncpg's release), asyncpg's shielded release, the argument model and the "
        "result's model, the payload's decoding and the result's encoding; no one of them is "
        "more than a few per cent of the samples (bench/results/profile.md, "
        "`make bench-profile`)."
    )


def console(data: dict[str, Any]) -> str:
    return "\n" + "\n".join(table(data)) + "\n"


def replace_section(page: str, section: str) -> str:
    """``page`` with its "Cost per job" section replaced by ``section`` (before "## Method", or
    appended, if it has none)."""
    start = page.find(HEADING + "\n")
    if start < 0:
        before = page.find("\n" + BEFORE + "\n")
        if before < 0:
            return page.rstrip("\n") + "\n\n" + section
        return page[: before + 1] + section + "\n" + page[before + 1 :]
    end = page.find("\n## ", start + len(HEADING))
    rest = page[end + 1 :] if end >= 0 else ""
    return page[:start] + section + ("\n" + rest if rest else "")


def last_section(output: Path | None) -> str:
    """The last ``make bench-cost`` run's section, kept in docs/performance.md by ``make bench``."""
    path = ROOT / "bench/results/cost.json"
    if output is not None or not path.exists():
        return ""
    return "\n" + markdown(json.loads(path.read_text())) + "\n"
