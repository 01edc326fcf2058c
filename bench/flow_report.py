"""The "Flow control" section of docs/performance.md and the console table, from ``bench.flow``'s
results (bench/results/flow.json)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.common import ROOT

HEADING = "## Flow control"
TARGETS = {"limit": 0.9, "blocked": 0.8, "priority": 0.9}
LABELS = {
    "limit": "a concurrency limit declared, never binding",
    "blocked": "100,000 blocked jobs in the queue beside them",
    "priority": "priorities 1..9 on every job",
}


def ratios(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, float | None]:
    """Per variant: the median over rounds of its throughput over that round's ``none``."""
    found: dict[str, float | None] = {}
    for variant in TARGETS:
        per_round = [
            r[variant]["jobs_per_s"] / r["none"]["jobs_per_s"]
            for r in rounds
            if r[variant].get("jobs_per_s") and r["none"].get("jobs_per_s")
        ]
        found[variant] = statistics.median(per_round) if per_round else None
    return found


def _median_rate(data: dict[str, Any], variant: str) -> float | None:
    rates = [r[variant]["jobs_per_s"] for r in data["rounds"] if r[variant].get("jobs_per_s")]
    return statistics.median(rates) if rates else None


def _rows(data: dict[str, Any]) -> list[str]:
    none = _median_rate(data, "none")
    rows = [
        "| variant | jobs/s (median) | ratio to none (median of rounds) | target |",
        "|---|---:|---:|---:|",
        f"| plain jobs (none) | {none or 0:,.0f} | 1.00 | |",
    ]
    for variant, target in TARGETS.items():
        ratio = data["ratios"].get(variant)
        label = LABELS[variant].replace("100,000", f"{data['options']['blocked']:,}")
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        met = "" if ratio is None else (" (met)" if ratio >= target else " (missed)")
        rate = _median_rate(data, variant) or 0
        rows.append(f"| {label} | {rate:,.0f} | {shown}{met} | >= {target} |")
    return rows


def markdown(data: dict[str, Any]) -> str:
    opts, meta = data["options"], data["meta"]
    settings = ", ".join(f"{k}={v}" for k, v in opts["settings"].items())
    return "\n".join(
        [
            HEADING,
            "",
            (
                f"`make bench-flow` (`python -m bench.flow`), {meta.get('rounds')} round(s)"
                f"{' (quick)' if meta.get('quick') else ''}: one worker ({settings}) drains "
                f"{opts['jobs']:,} `get_user` jobs per variant, the variants of a round in turn "
                "(order rotating), throughput from the first start to the last finish. The blocked "
                "jobs wait on a full limit of their own, moved to its blocked set before the drain."
            ),
            "",
            *_rows(data),
            "",
        ]
    )


def console(data: dict[str, Any]) -> str:
    return "\n" + "\n".join(_rows(data)) + "\n"


def replace_section(page: str, section: str) -> str:
    """``page`` with its "Flow control" section replaced by ``section`` (appended if none)."""
    start = page.find(HEADING + "\n")
    if start < 0:
        return page.rstrip("\n") + "\n\n" + section
    end = page.find("\n## ", start + len(HEADING))
    rest = page[end + 1 :] if end >= 0 else ""
    return page[:start] + section + ("\n" + rest if rest else "")


def last_section(output: Path | None) -> str:
    """The last ``make bench-flow`` run's section, kept in docs/performance.md by ``make bench``."""
    path = ROOT / "bench/results/flow.json"
    if output is not None or not path.exists():
        return ""
    return markdown(json.loads(path.read_text()))
