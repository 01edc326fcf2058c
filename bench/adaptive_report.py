"""The "Adaptive concurrency" section of docs/performance.md and the console tables, from
``bench.adaptive``'s results (bench/results/adaptive.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import ROOT, median

HEADING = "## Adaptive concurrency"
RATIO_TARGET = 0.9  # auto's DB-job throughput over the best fixed limit's
WAIT_SHARE = 0.25  # auto's p99 acquire wait under this share of PG_ACQUIRE_TIMEOUT

Rounds = list[dict[str, dict[str, dict[str, Any]]]]


def _values(rounds: Rounds, phase: str, variant: str, key: str) -> list[float]:
    return [float(r[phase][variant][key]) for r in rounds if r[phase][variant].get(key) is not None]


def figures(rounds: Rounds, acquire_timeout: float) -> dict[str, Any]:
    """The targets' figures: the best fixed limit (the highest median over rounds) and auto over it
    round by round (the median of those ratios; each round's pair ran minutes apart at most), and
    the slowed database's timeouts and p99 waits (medians of rounds, and auto's worst round).

    Not auto over the best fixed limit *of each round*: the highest of five noisy figures is
    biased upward (on this machine a configuration's runs differ by a factor up to 2), and that
    ratio would be below 1 for a copy of the best fixed limit itself."""
    medians = {
        v: median(_values(rounds, "db", v, "jobs_per_s"))
        for v in (rounds[0]["db"] if rounds else {})
    }
    fixed_medians = {v: m for v, m in medians.items() if v != "auto" and m is not None}
    best = max(fixed_medians, key=lambda v: fixed_medians[v]) if fixed_medians else None
    per_round = []
    for r in rounds:
        auto = r["db"]["auto"]["jobs_per_s"]
        fixed = r["db"][best]["jobs_per_s"] if best is not None else None
        if auto and fixed:
            per_round.append(auto / fixed)
    slowed = {
        v: {
            "timeouts": median(_values(rounds, "slowed", v, "timeouts")),
            "wait_p99_s": median(_values(rounds, "slowed", v, "wait_p99_s")),
            "wait_p99_worst_s": max(_values(rounds, "slowed", v, "wait_p99_s"), default=None),
        }
        for v in (rounds[0]["slowed"] if rounds else {})
    }
    return {
        "db_jobs_per_s": medians,
        "best_fixed": best,
        "ratio": median(per_round),
        "ratio_rounds": per_round,
        "slowed": slowed,
        "wait_bound_s": acquire_timeout * WAIT_SHARE,
    }


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _db_rows(data: dict[str, Any]) -> list[str]:
    fig = data["figures"]
    rows = ["| WORKER_MAX_JOBS | jobs/s (median) | runs |", "|---|---:|---|"]
    for variant, rate in fig["db_jobs_per_s"].items():
        runs = ", ".join(f"{v:,.0f}" for v in _values(data["rounds"], "db", variant, "jobs_per_s"))
        label = (
            "auto"
            if variant == "auto"
            else f"{variant}{' (best)' * (variant == fig['best_fixed'])}"
        )
        rows.append(f"| {label} | **{rate or 0:,.0f}** | {runs} |")
    ratio = fig["ratio"]
    shown = "n/a" if ratio is None else f"**{ratio:.2f}** ({_met(ratio >= RATIO_TARGET)})"
    each = ", ".join(f"{v:.2f}" for v in fig["ratio_rounds"])
    best = fig["best_fixed"]
    rows.append(
        f"| auto / {best} (the best fixed), median of rounds (target >= {RATIO_TARGET}) "
        f"| {shown} | {each} |"
    )
    return rows


def _slowed_rows(data: dict[str, Any]) -> list[str]:
    fig, opts = data["figures"], data["options"]
    bound = fig["wait_bound_s"]
    rows = [
        (
            f"| WORKER_MAX_JOBS | acquire timeouts (of {opts['slowed_jobs']:,}) | p99 acquire wait, s "
            "| runs (timeouts / p99 s) | limit p50 / max |"
        ),
        "|---|---:|---:|---|---|",
    ]
    for variant, m in fig["slowed"].items():
        per = [r["slowed"][variant] for r in data["rounds"]]
        runs = ", ".join(f"{p['timeouts']} / {p['wait_p99_s'] or 0:.3f}" for p in per)
        if variant == "auto":
            limits = ", ".join(f"{p.get('limit_p50') or 0:.0f} / {p.get('limit_max')}" for p in per)
        else:
            limits = f"{variant} (fixed)"
        rows.append(
            f"| {variant} | **{m['timeouts'] or 0:,.0f}** | **{m['wait_p99_s'] or 0:.3f}** "
            f"| {runs} | {limits} |"
        )
    auto, fixed = fig["slowed"].get("auto", {}), fig["slowed"].get("200", {})
    worst = auto.get("wait_p99_worst_s")
    rows += [
        "",
        f"- auto's p99 acquire wait under PG_ACQUIRE_TIMEOUT / 4 = {bound:g} s: "
        + (
            "n/a"
            if worst is None
            else f"{_met(worst < bound)} (worst round {worst:.3f} s, median "
            f"{auto.get('wait_p99_s') or 0:.3f} s)"
        ),
        (
            f"- a fixed 200 times out: {_met(bool(fixed.get('timeouts')))} "
            f"(median {fixed.get('timeouts') or 0:,.0f} acquire timeouts a drain)"
        ),
    ]
    return rows


def markdown(data: dict[str, Any]) -> str:
    opts, meta = data["options"], data["meta"]
    load = ", ".join(f"{v:.1f}" for v in meta.get("load_average", ()))
    return "\n".join(
        [
            HEADING,
            "",
            (
                f"`make bench-adaptive` (`python -m bench.adaptive`), {meta.get('date')}, "
                f"{meta.get('rounds')} round(s){' (quick)' if meta.get('quick') else ''}, "
                f"{meta.get('duration_s', 0):.0f} s: every drain is a fresh burst worker on a pool "
                f"of {opts['pool']} (PG_POOL_MAX_SIZE), the variants of a round in turn (order "
                "rotating), so `auto` starts at the pool's size and its slow start is in every "
                "figure. **Noisy figures:** a shared machine with "
                f"{meta.get('cpus')} cores (load average {load} at the end of the run) on which "
                "other engineers run tests: one configuration's runs differ by up to 2x. The best "
                "fixed limit is the one of the highest median, and auto's ratio to it is taken "
                "round by round, then its median (the highest fixed figure of each round instead "
                "would be biased upward by the noise, below 1 even for a copy of itself)."
            ),
            "",
            (
                f"**DB job**: {opts['jobs']:,} `get_user` jobs per drain, throughput from the "
                "first start to the last finish."
            ),
            "",
            *_db_rows(data),
            "",
            (
                f"**Slowed database**: {opts['slowed_jobs']:,} jobs per drain that hold their "
                f"connection {opts['hold_s']:g} s in `pg_sleep` (`bench/adaptive_settings.py`), "
                f"PG_ACQUIRE_TIMEOUT={opts['acquire_timeout_s']:g} s; each job times its own wait "
                "for a connection, and a timed-out acquire is counted (and not retried, so every "
                "drain is the same jobs). A fixed 200 on 20 connections queues 180 jobs, about "
                f"{180 / 20 * opts['hold_s']:.2f} s of holds."
            ),
            "",
            *_slowed_rows(data),
            "",
        ]
    )


def console(data: dict[str, Any]) -> str:
    return "\n" + "\n".join([*_db_rows(data), "", *_slowed_rows(data)]) + "\n"


def replace_section(page: str, section: str) -> str:
    """``page`` with its "Adaptive concurrency" section replaced by ``section`` (appended if
    none)."""
    start = page.find(HEADING + "\n")
    if start < 0:
        return page.rstrip("\n") + "\n\n" + section
    end = page.find("\n## ", start + len(HEADING))
    rest = page[end + 1 :] if end >= 0 else ""
    return page[:start] + section + ("\n" + rest if rest else "")


def last_section(output: Path | None) -> str:
    """The last ``make bench-adaptive`` run's section, kept in docs/performance.md by ``make
    bench``."""
    path = ROOT / "bench/results/adaptive.json"
    if output is not None or not path.exists():
        return ""
    return "\n" + markdown(json.loads(path.read_text()))
