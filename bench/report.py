"""The run's results as JSON, a markdown report (docs/performance.md), a console summary and a
bar chart (docs/performance.png)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import median
from bench.options import BULK_FACTOR, JOB_KINDS, SYSTEM_LABELS, SYSTEMS, pool_for
from bench.probes import ENQUEUE_MODES
from bench.runner import Step

ROOT = Path(__file__).resolve().parents[1]

Entry = dict[str, Any]
POOL_MODES = ("pool", "pool-keep")
LIMIT_MODES = {
    "pool": "pool acquire + fetchrow (asyncpg's reset query on release)",
    "pool-keep": "pool acquire + fetchrow, no reset query (as this worker by default)",
    "connect": "connect + fetchrow + close",
}
RATIOS = (
    ("ours/saq:db", "ours / SAQ, DB job"),
    ("ours/saq:noop", "ours / SAQ, no-op"),
    ("ours/limit:db", "ours DB job / raw pool limit"),
    ("ours/limit-keep:db", "ours DB job / raw pool limit without reset query"),
    ("ours/arq:db", "ours / bare arq, DB job"),
    ("ours/arq:noop", "ours / bare arq, no-op"),
)
ENQUEUE_LABELS = {
    "seq": "one by one (await each)",
    "gather": "gathered (asyncio.gather of 100)",
    "bulk": "bulk (1,000 per round trip)",
}
ENQUEUE_APIS = {
    "ours": {
        "seq": "JobClient.get_user",
        "gather": "JobClient.get_user",
        "bulk": "JobClient.enqueue_many",
    },
    "arq": {"seq": "enqueue_job", "gather": "enqueue_job", "bulk": "hand-rolled PSETEX+ZADD"},
    "saq": {"seq": "Queue.enqueue", "gather": "Queue.enqueue"},
}


def aggregate(steps: Sequence[Step], results: dict[str, list[dict[str, Any]]]) -> dict[str, Entry]:
    """Per measurement: every round's metrics, the errors, and the median of each number."""
    entries: dict[str, Entry] = {}
    for step in steps:
        runs = results.get(step.key, [])
        ok = [r for r in runs if "error" not in r]
        names = {k for r in ok for k, v in r.items() if isinstance(v, int | float)}
        entries[step.key] = {
            "label": step.label,
            "median": {
                k: median(r.get(k) for r in ok if not isinstance(r.get(k), bool))
                for k in sorted(names)
            },
            "runs": runs,
            "errors": [str(r["error"]) for r in runs if "error" in r],
        }
    return entries


def value(entries: dict[str, Entry], key: str, metric: str) -> float | None:
    entry = entries.get(key)
    if entry is None:
        return None
    found = entry["median"].get(metric)
    return None if found is None else float(found)


def runs_of(entries: dict[str, Entry], key: str, metric: str) -> list[float]:
    entry = entries.get(key)
    if entry is None:
        return []
    return [float(r[metric]) for r in entry["runs"] if r.get(metric) is not None]


def ratios(
    entries: dict[str, Entry], concurrencies: Sequence[int]
) -> dict[str, dict[str, float | None]]:
    """ours / SAQ, ours / raw limit, ours / bare arq at each concurrency (medians of jobs/s)."""
    out: dict[str, dict[str, float | None]] = {}
    for c in concurrencies:
        rate = {
            (s, k): value(entries, f"drain:{s}:{k}:{c}", "jobs_per_s")
            for s in SYSTEMS
            for k in JOB_KINDS
        }
        limit = value(entries, f"limit:pool:{c}", "qps")
        keep = value(entries, f"limit:pool-keep:{c}", "qps")
        pairs = {
            "ours/saq:db": (rate["ours", "db"], rate["saq", "db"]),
            "ours/saq:noop": (rate["ours", "noop"], rate["saq", "noop"]),
            "ours/limit:db": (rate["ours", "db"], limit),
            "ours/limit-keep:db": (rate["ours", "db"], keep),
            "ours/arq:db": (rate["ours", "db"], rate["arq", "db"]),
            "ours/arq:noop": (rate["ours", "noop"], rate["arq", "noop"]),
        }
        out[str(c)] = {
            name: (a / b if a is not None and b else None) for name, (a, b) in pairs.items()
        }
    return out


# Formatting.


def num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def runs_text(values: Sequence[float], digits: int = 0) -> str:
    return ", ".join(num(v, digits) for v in values)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(entries: dict[str, Entry], key: str, metric: str, digits: int = 0) -> str:
    entry = entries.get(key)
    if entry is None:
        return "not run"
    found = value(entries, key, metric)
    if found is None and entry["errors"]:
        return "error" if not entry["errors"][0].startswith("skipped") else "skipped"
    return num(found, digits)


def headline_table(data: dict[str, Any]) -> str:
    entries: dict[str, Entry] = data["measurements"]
    cs: list[int] = data["options"]["concurrencies"]
    header = ["jobs/s (median)", *(f"C = {c}" for c in cs)]
    rows = [
        ["**LIMIT** raw asyncpg pool, queries/s (uvloop, pool = min(C, 20))"]
        + [_cell(entries, f"limit:pool:{c}", "qps") for c in cs],
        ["raw asyncpg pool without its reset query on release, queries/s"]
        + [_cell(entries, f"limit:pool-keep:{c}", "qps") for c in cs],
        ["connect + query + close per query, queries/s"]
        + [
            _cell(entries, f"limit:connect:{c}", "qps")
            if f"limit:connect:{c}" in entries
            else "not run"
            for c in cs
        ],
    ]
    for kind, kind_label in (("noop", "no-op"), ("db", "DB job")):
        for system in SYSTEMS:
            label = SYSTEM_LABELS[system] + f", **{kind_label}**"
            if system == "ours":
                label = "**" + SYSTEM_LABELS[system] + f"**, **{kind_label}**"
            rows.append(
                [label] + [_cell(entries, f"drain:{system}:{kind}:{c}", "jobs_per_s") for c in cs]
            )
    return table(header, rows)


def targets_table(data: dict[str, Any]) -> str:
    """The issue's targets for one worker process, and what this run reached (worst case over C)."""
    entries: dict[str, Entry] = data["measurements"]
    cs: list[int] = data["options"]["concurrencies"]
    found: dict[str, dict[str, float | None]] = data["ratios"]

    def worst(name: str) -> float | None:
        values = [found[str(c)][name] for c in cs]
        return None if any(v is None for v in values) else min(v for v in values if v is not None)

    peaks = [value(entries, f"drain:ours:{k}:{c}", "peak_rss_mb") for k in JOB_KINDS for c in cs]
    peak = max((p for p in peaks if p is not None), default=None)
    checks = [
        ("DB job, ours / SAQ (lowest over C)", "≥ 2.0", worst("ours/saq:db"), 2, 2.0, True),
        (
            "DB job, ours / raw pool limit (lowest over C)",
            "≥ 0.4",
            worst("ours/limit:db"),
            2,
            0.4,
            True,
        ),
        (
            "enqueue → finish p50 at 200 jobs/s, ms",
            "≤ 5",
            value(entries, "latency:ours", "p50_ms"),
            0,
            5.0,
            False,
        ),
        (
            "idle CPU, % of a core",
            "≤ 2",
            value(entries, "idle:ours", "idle_cpu_pct"),
            2,
            2.0,
            False,
        ),
        (
            "bulk enqueue, jobs/s",
            "≥ 20,000",
            value(entries, "enqueue:ours:bulk", "jobs_per_s"),
            0,
            20_000,
            True,
        ),
        ("worker peak RSS over the drains, MB", "≤ 60", peak, 1, 60.0, False),
    ]
    rows = []
    for label, target, reached, digits, bound, at_least in checks:
        if reached is None:
            verdict = "not measured"
        else:
            verdict = (
                "met" if (reached >= bound if at_least else reached <= bound) else "**missed**"
            )
        rows.append([label, target, num(reached, digits), verdict])
    return table(["target (one worker process)", "wanted", "this run", "verdict"], rows)


def ratio_table(data: dict[str, Any]) -> str:
    cs: list[int] = data["options"]["concurrencies"]
    found: dict[str, dict[str, float | None]] = data["ratios"]
    rows = [[label] + [num(found[str(c)][name], 2) for c in cs] for name, label in RATIOS]
    return table(["ratio of medians", *(f"C = {c}" for c in cs)], rows)


def drain_table(data: dict[str, Any]) -> str:
    entries: dict[str, Entry] = data["measurements"]
    rows = []
    for c in data["options"]["concurrencies"]:
        for kind in JOB_KINDS:
            for system in SYSTEMS:
                key = f"drain:{system}:{kind}:{c}"
                e = entries[key]
                med = e["median"]
                completed = f"{num(med.get('completed'))}/{num(med.get('jobs'))}"
                if med.get("failed"):
                    completed += f" ({num(med.get('failed'))} failed)"
                rows.append(
                    [
                        f"{system} {kind} C={c} (pool {pool_for(c)})",
                        "**" + _cell(entries, key, "jobs_per_s") + "**",
                        runs_text(runs_of(entries, key, "jobs_per_s"))
                        or "; ".join(e["errors"])[:80],
                        num(med.get("worker_cpu_pct")),
                        num(med.get("peak_rss_mb"), 1),
                        num(med.get("pg_backends_max")),
                        completed,
                    ]
                )
    header = [
        "configuration",
        "jobs/s",
        "runs",
        "worker CPU %",
        "peak RSS MB",
        "PG backends max",
        "done",
    ]
    return table(header, rows)


def latency_table(data: dict[str, Any]) -> str:
    entries: dict[str, Entry] = data["measurements"]
    rows = []
    for system in SYSTEMS:
        key = f"latency:{system}"
        med = entries[key]["median"]
        p50s, p99s = runs_of(entries, key, "p50_ms"), runs_of(entries, key, "p99_ms")
        rows.append(
            [
                SYSTEM_LABELS[system],
                num(med.get("achieved_rate")),
                "**" + num(med.get("p50_ms")) + "**",
                num(med.get("p90_ms")),
                "**" + num(med.get("p99_ms")) + "**",
                num(med.get("max_ms")),
                num(med.get("wait_p50_ms")),
                num(med.get("wait_p99_ms")),
                "; ".join(f"{num(a)}/{num(b)}" for a, b in zip(p50s, p99s, strict=False)),
            ]
        )
    header = [
        "worker",
        "rate/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "wait p50",
        "wait p99",
        "runs (p50/p99)",
    ]
    return table(header, rows)


def idle_table(data: dict[str, Any]) -> str:
    entries: dict[str, Entry] = data["measurements"]
    rows = []
    for system in SYSTEMS:
        med = entries[f"idle:{system}"]["median"]
        peak = [
            value(entries, f"drain:{system}:{k}:{c}", "peak_rss_mb")
            for k in JOB_KINDS
            for c in data["options"]["concurrencies"]
        ]
        backends = [
            value(entries, f"drain:{system}:{k}:{c}", "pg_backends_max")
            for k in JOB_KINDS
            for c in data["options"]["concurrencies"]
        ]
        rows.append(
            [
                SYSTEM_LABELS[system],
                num(med.get("idle_cpu_pct"), 2),
                num(med.get("rss_mb"), 1),
                num(med.get("pg_backends")),
                num(max((p for p in peak if p is not None), default=None), 1),
                num(max((b for b in backends if b is not None), default=None)),
            ]
        )
    header = [
        "worker",
        "idle CPU %",
        "idle RSS MB",
        "idle PG backends",
        "peak RSS MB (drains)",
        "PG backends max (drains)",
    ]
    return table(header, rows)


def enqueue_table(data: dict[str, Any]) -> str:
    entries: dict[str, Entry] = data["measurements"]
    rows = []
    for system, modes in ENQUEUE_MODES.items():
        for mode in modes:
            key = f"enqueue:{system}:{mode}"
            rows.append(
                [
                    SYSTEM_LABELS[system],
                    ENQUEUE_LABELS[mode],
                    ENQUEUE_APIS[system][mode],
                    "**" + _cell(entries, key, "jobs_per_s") + "**",
                    runs_text(runs_of(entries, key, "jobs_per_s")),
                ]
            )
    return table(["client", "mode", "API", "jobs/s", "runs"], rows)


def limit_table(data: dict[str, Any]) -> str:
    entries: dict[str, Entry] = data["measurements"]
    rows = []
    keys = [f"limit:{m}:{c}" for c in data["options"]["concurrencies"] for m in POOL_MODES]
    keys += [f"limit:connect:{c}" for c in data["options"]["connect_concurrencies"]]
    for key in keys:
        _, mode, c = key.split(":")
        med = entries[key]["median"]
        errors = entries[key]["errors"]
        rows.append(
            [
                LIMIT_MODES[mode],
                c,
                str(pool_for(int(c))) if mode in POOL_MODES else "-",
                "**" + _cell(entries, key, "qps") + "**",
                runs_text(runs_of(entries, key, "qps")) or "; ".join(errors)[:100],
                num(med.get("p50_ms"), 2),
                num(med.get("p99_ms"), 2),
                num(med.get("client_cpu_pct")),
                num(med.get("errors")),
            ]
        )
    header = [
        "mode",
        "C",
        "pool",
        "queries/s",
        "runs",
        "p50 ms",
        "p99 ms",
        "client CPU %",
        "errors",
    ]
    return table(header, rows)


def _first_and_last(error: str) -> str:
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"


def console_summary(data: dict[str, Any]) -> str:
    meta = data["meta"]
    text = [
        (
            f"\nmake bench: {meta['rounds']} round(s), {meta['duration_s'] / 60:.1f} min, "
            f"worker {meta['git']}\n\n"
        ),
        headline_table(data),
        "\n",
        targets_table(data),
        "\n",
        ratio_table(data),
        "\n",
        latency_table(data),
    ]
    if meta.get("worker_changed_during_run"):
        text.append("\nWARNING: worker/ or jobs/ changed during the run: run it again.\n")
    errors = [
        f"  {e['label']}: {_first_and_last(err)}"
        for e in data["measurements"].values()
        for err in e["errors"]
    ]
    if errors:
        text.append("\nerrors / skipped:\n" + "\n".join(errors) + "\n")
    return "".join(text)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def write_section(
    data: dict[str, Any],
    stem: str,
    section: str,
    replace_section: Callable[[str, str], str],
    output: Path | None,
) -> tuple[Path, Path]:
    """A bench section's figures: ``<stem>.json`` and its markdown ``section``, into ``output``
    (as ``<stem>.md``) or, by default, bench/results/ and docs/performance.md (its section
    replaced). Returns the two paths written."""
    if output is not None:
        json_path, md_path = output / f"{stem}.json", output / f"{stem}.md"
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(section)
    else:
        json_path = ROOT / "bench" / "results" / f"{stem}.json"
        md_path = ROOT / "docs" / "performance.md"
        md_path.write_text(replace_section(md_path.read_text(), section))
    write_json(data, json_path)
    return json_path, md_path


def plot(data: dict[str, Any], path: Path) -> None:
    """Grouped bars: jobs/s per system and concurrency, DB job and no-op panels; the raw pool limit
    written above each DB group (as a bar it would flatten the others)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries: dict[str, Entry] = data["measurements"]
    cs: list[int] = data["options"]["concurrencies"]
    colors = {"arq": "#9e9e9e", "ours": "#1f77b4", "saq": "#ff7f0e"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    panels = (("db", "DB job: one indexed lookup per job"), ("noop", "no-op job: the queue alone"))
    width = 0.8 / len(SYSTEMS)
    for ax, (kind, title) in zip(axes, panels, strict=True):
        bars: list[tuple[float, float, float]] = []  # x, height, top of its whisker
        for i, system in enumerate(SYSTEMS):
            keys = [f"drain:{system}:{kind}:{c}" for c in cs]
            heights = [value(entries, k, "jobs_per_s") or 0.0 for k in keys]
            spread = [runs_of(entries, k, "jobs_per_s") for k in keys]
            lows = [h - min(r, default=h) for h, r in zip(heights, spread, strict=True)]
            highs = [max(r, default=h) - h for h, r in zip(heights, spread, strict=True)]
            xs = [j + (i - (len(SYSTEMS) - 1) / 2) * width for j in range(len(cs))]
            ax.bar(
                xs,
                heights,
                width * 0.95,
                label=SYSTEM_LABELS[system],
                color=colors[system],
                yerr=[lows, highs],
                capsize=3,
                error_kw={"elinewidth": 0.9, "ecolor": "#333333"},
            )
            bars += [(x, h, h + hi) for x, h, hi in zip(xs, heights, highs, strict=True)]
        ymax = max((top for _, _, top in bars), default=1.0) or 1.0
        ymax *= 1.3 if kind == "db" else 1.1
        ax.set_ylim(0, ymax)
        for x, h, top in bars:
            if not h:
                ax.text(x, ymax * 0.01, "n/a", ha="center", va="bottom", fontsize=8)
            elif h >= 0.12 * ymax:  # inside, near the base, clear of the whisker
                ax.text(
                    x,
                    ymax * 0.015,
                    f"{h:,.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=8.5,
                    color="white",
                    fontweight="bold",
                )
            else:
                ax.text(
                    x,
                    top + ymax * 0.01,
                    f"{h:,.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=8.5,
                    fontweight="bold",
                )
        ax.set_xticks(range(len(cs)), [f"C = {c}" for c in cs])
        ax.set_title(title, fontsize=11)
        ax.set_ylabel("jobs per second (median; whiskers: min to max of rounds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    top = axes[0].get_ylim()[1]
    for j, c in enumerate(cs):
        limit = value(entries, f"limit:pool:{c}", "qps")
        keep = value(entries, f"limit:pool-keep:{c}", "qps")
        if limit is not None:
            axes[0].annotate(
                f"raw asyncpg pool limit\n{limit:,.0f} queries/s"
                + ("" if keep is None else f"\n({keep:,.0f} without reset)"),
                (j, top * 0.97),
                ha="center",
                va="top",
                fontsize=8,
                color="#2ca02c",
                fontweight="bold",
            )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(SYSTEMS), fontsize=9, frameon=False)
    meta = data["meta"]
    fig.suptitle(
        f"Jobs per second on one {meta['cpus']}-core box (worker, Redis, PostgreSQL and bench "
        f"together): median of {meta['rounds']} round(s), {data['options']['jobs']:,} jobs per "
        f"drain, pool = min(C, 20)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown(data: dict[str, Any], image: str, growth: str = "", producers: str = "") -> str:
    """The whole page; ``growth`` is the "How cost grows" section (bench/growth_report.py),
    ``producers`` the "Producers" one (bench/producers_report.py)."""
    meta = data["meta"]
    changed = (
        "\n**Warning: the worker's code (worker/, jobs/) changed while this run was going on; its "
        "rounds may have measured different code. Run `make bench` again.**\n"
        if meta.get("worker_changed_during_run")
        else ""
    )
    o = data["options"]
    cs = ", ".join(str(c) for c in o["concurrencies"])
    versions = table(["item", "version"], [[k, str(v)] for k, v in meta["versions"].items()])
    return f"""# Performance

Generated by `make bench` (`python -m bench`) on {meta["date"]}: {meta["rounds"]} round(s) in
{meta["duration_s"] / 60:.1f} min, worker code at `{meta["git"]}`. Run `make bench` again to refresh
this page, `docs/performance.png` and `bench/results/latest.json` (every run's numbers).
{changed}
All figures come from **one {meta["cpus"]}-core shared machine** on which the bench, the worker,
Redis and PostgreSQL all run. Each figure is the **median over the rounds**; the runs are listed next
to it. Every configuration is measured once per round, all systems side by side (round-robin), so
ratios between rows come from the same period. Read the caveats before quoting a number. Where a
job's time goes inside the worker: `make bench-profile` (bench/results/profile.md).

![jobs per second by system and concurrency]({image})

## Headline: jobs per second

C is the concurrency: arq's `max_jobs`, this worker's `WORKER_MAX_JOBS`, SAQ's `concurrency`, or the
number of client coroutines for the limit. Every pool has at most min(C, 20) connections.

{headline_table(data)}
## Targets

{targets_table(data)}
## Ratios

{ratio_table(data)}
## Drains in detail

{o["jobs"]:,} jobs per drain, enqueued before the worker starts; throughput from the first job start
to the last job finish as the queue itself recorded them.

{drain_table(data)}
## End-to-end latency at a fixed rate

Each worker at its defaults (this worker: `WORKER_MAX_JOBS` 20, `POLL_DELAY` 0.05 s; bare arq:
`max_jobs` 10, `poll_delay` 0.5 s, pool 10; SAQ: concurrency 10, pool 10), DB jobs enqueued one at a
time with each system's own client at {o["latency_rate"]:g}/s for {o["latency_seconds"]:g} s.
Enqueue → finish (and enqueue → start, "wait") from the queue's ms timestamps.

{latency_table(data)}
## Idle cost, memory and connections

Idle: the same default workers with an empty queue, CPU over {o["idle_seconds"]:g} s after a
warm-up job. Peak RSS (VmHWM) and Postgres backends (max count in `pg_stat_activity` for the bench
database, sampled every 0.1 s) over the drains.

{idle_table(data)}
## Enqueue rate

{o["enqueue_jobs"]:,} jobs one by one or gathered, {o["enqueue_jobs"] * BULK_FACTOR:,} in bulk; no
worker running.

{enqueue_table(data)}
{producers}## The database's limit, without any queue

{limit_table(data)}
{growth}## Method

* **Database**: `users` with {meta["users"]:,} rows (seeded by `worker.ops.seed.seed_users`, migrated by
  `worker.db.pool.migrate`); every DB job and the limit run `select * from users where id=$1` (or this
  worker's `get_user`, the same lookup) with a random id, an index lookup on a cached table.
* **Systems**, each as a subprocess started in a scratch directory with only its own variables:
  * *this worker*: `arq bench.ours_settings.BenchSettings --burst`, the real `worker.Settings` plus a
    bench-only `noop` job built like the product's jobs (`arq_function(JobSpec(...))`), configured by
    `DATABASE_URL`, `REDIS_URL`, `QUEUE_NAME`, `WORKER_MAX_JOBS=C`, `PG_POOL_MAX_SIZE=min(C, 20)` and
    `CRON_DEACTIVATE=""`; every other setting at its default. The DB job is `get_user`.
  * *bare arq*: `arq bench.arq_naive.WorkerSettings --burst`, arq 0.28 as documented: pickle,
    `poll_delay` 0.5 s, INFO log lines, results kept; asyncpg pool (min(10, pool), pool) in `ctx`.
  * *SAQ*: `python -m bench.saq_app --burst` (`Worker(burst=True, dequeue_timeout=0.5)`), JSON, no
    per-job logging (its default), the same pool in the context.
* **Drains** ({cs}): jobs enqueued in bulk first (this worker: `worker.queue.enqueue.enqueue_many`, its
  Lua script, one call per 1,000 jobs; bare arq: arq's keys written by a pipeline; SAQ:
  `Queue.enqueue`, 100 at a time), then the burst worker drains them. Throughput = completed jobs /
  (first start → last finish) from arq's stored results (`st`, `ft`) or SAQ's job records (`started`,
  `completed`); start-up and the final empty poll are excluded. Worker CPU % is the process's CPU
  time (`/proc/<pid>/stat`, sampled every 0.02 s) over that window.
* **Limit**: `python -m bench.limit` on uvloop, C coroutines looping on `pool.acquire()` + `fetchrow`
  for {o["limit_seconds"]:g} s (pool min = max = min(C, 20), every connection warmed first); once
  with asyncpg's defaults (its reset query on every release: two round trips per query), once without
  the reset query, as this worker releases connections by default (`PG_RESET_SESSION=false`; jobs
  keep no session state). The target ratio is against the first.
  Connect-per-query: connect + fetchrow + close for {o["connect_seconds"]:g} s at C =
  {", ".join(str(c) for c in o["connect_concurrencies"])}; never at C = 100 (the shared server allows
  {meta["max_connections"]} connections), and skipped when the server has too few free ones.
* **Order**: each round runs, per concurrency, the limit and then no-op and DB drains of bare arq,
  this worker and SAQ, then connect-per-query, latency, idle and enqueue. Redis: logical db of
  `{meta["redis_url"]}`; every key a measurement creates carries its own tag and is deleted after it
  (never FLUSHDB).

## Caveats

* **Noise**: a shared 2-core box. CPU-bound figures move ±10-25 % between rounds; compare rows of one
  run, not small differences between medians. Arithmetic-bound ones (bare arq at its default poll)
  repeat to ±1 %.
* **One box for everything**: the worker competes with Redis, PostgreSQL and the bench for 2 cores.
  With Redis and PostgreSQL elsewhere every CPU-bound figure would be higher.
* **Not the same work per job**: this worker validates arguments (pydantic), holds a lease, applies
  its retry policy, keeps metrics and writes JSON results (for `get_user`, the user row); the naive
  arq and SAQ jobs return an id. That is the product, but it is not a queue-only comparison: the no-op
  rows isolate each system's own per-job cost.
* **Logging and event loop differ by default**: bare arq logs 2 INFO lines per job (to a file here);
  this worker logs one summary line every 10 s (per-job lines at DEBUG); SAQ logs none. This worker
  runs on uvloop (its settings install it); bare arq and SAQ run on asyncio; the limit runs on uvloop.
* **Bare arq at its defaults is capped by arithmetic**: it starts at most
  `max(5 * max_jobs, 100)` jobs per 0.5 s poll, i.e. 200 / 500 / 1,000 jobs/s at C = 10 / 50 / 100.
* Timestamps have ms resolution; short drains (`--quick`) give rough rates and CPU %.
* The bare-arq bulk enqueue is not an arq API and skips arq's duplicate-id check; this worker's
  `enqueue_many` keeps the check (and validates every job's arguments first).

## Versions

{versions}"""  # noqa: S608  (markdown that quotes the query, not SQL built from input)
