"""One bench run: every measurement once per round, rounds repeated, with a progress line per
finished measurement (and an ETA from the measured durations of earlier rounds)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench import probes, producers
from bench.common import delete_tagged, median, new_tag, say
from bench.options import BULK_FACTOR, JOB_KINDS, SYSTEM_LABELS, SYSTEMS, pool_for
from bench.systems import BenchError, Target, drain

ARQ_POLL_DELAY = 0.5


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    estimate: float  # seconds, until an earlier round has measured it
    run: Callable[[str], Awaitable[dict[str, Any]]]  # called with the measurement's key tag


def _drain_estimate(target: Target, system: str, concurrency: int) -> float:
    n = target.opts.jobs
    if system == "arq":  # arq's poll arithmetic: queue_read_limit jobs per poll_delay
        return n / (max(5 * concurrency, 100) / ARQ_POLL_DELAY) + 3
    return n / 1000 + (n / 3000 if system == "saq" else 0) + 3


def producer_steps(target: Target) -> list[Step]:
    """The producers' measurements (``--only producers``): bench/producers.py."""
    opts = target.opts
    rate = opts.latency_rate
    return [
        Step(
            "producers:commit-start",
            f"outbox commit->start @{rate:g}/s",
            opts.latency_seconds + 5,
            partial(producers.commit_to_start, target),
        ),
        Step(
            "producers:relay",
            f"outbox relay {opts.relay_rows:,} rows",
            opts.relay_rows / 10_000 + 5,
            partial(producers.relay_rate, target),
        ),
        Step(
            "producers:node-bulk",
            f"TypeScript enqueueMany {opts.node_jobs:,}",
            opts.node_jobs / 30_000 + 2,
            partial(producers.node_bulk, target),
        ),
        Step(
            "producers:python-bulk",
            "slim vs worker enqueue_many",
            2 * opts.enqueue_jobs * BULK_FACTOR / 50_000 + 1,
            partial(producers.python_bulk, target),
        ),
    ]


def plan(target: Target, only: str | None = None) -> list[Step]:
    """The measurements of one round, configurations of one concurrency side by side (``only``
    "producers": only bench/producers.py's)."""
    opts = target.opts
    if only == "producers":
        return producer_steps(target)
    steps: list[Step] = []
    for c in opts.concurrencies:
        steps.append(
            Step(
                f"limit:pool:{c}",
                f"limit pool c={c} pool={pool_for(c)}",
                opts.limit_seconds + 1.5,
                partial(probes.limit, target, "pool", c),
            )
        )
        steps.append(
            Step(
                f"limit:pool-keep:{c}",
                f"limit pool, no reset, c={c}",
                opts.limit_seconds + 1.5,
                partial(probes.limit, target, "pool-keep", c),
            )
        )
        for kind in JOB_KINDS:
            for system in SYSTEMS:
                steps.append(
                    Step(
                        f"drain:{system}:{kind}:{c}",
                        f"drain {system} {kind} c={c}",
                        _drain_estimate(target, system, c),
                        partial(drain, target, system, kind, c),
                    )
                )
    for c in opts.connect_concurrencies:
        steps.append(
            Step(
                f"limit:connect:{c}",
                f"connect-per-query c={c}",
                opts.connect_seconds + 1.5,
                partial(probes.limit, target, "connect", c),
            )
        )
    for system in SYSTEMS:
        steps.append(
            Step(
                f"latency:{system}",
                f"latency {system} @{opts.latency_rate:g}/s",
                opts.latency_seconds + 4,
                partial(probes.latency, target, system),
            )
        )
    for system in SYSTEMS:
        steps.append(
            Step(
                f"idle:{system}",
                f"idle {system}",
                opts.idle_seconds + 4,
                partial(probes.idle, target, system),
            )
        )
    for system, modes in probes.ENQUEUE_MODES.items():
        for mode in modes:
            rate = {"seq": 2500, "gather": 3500, "bulk": 30000}[mode]
            steps.append(
                Step(
                    f"enqueue:{system}:{mode}",
                    f"enqueue {system} {mode}",
                    opts.enqueue_jobs * (BULK_FACTOR if mode == "bulk" else 1) / rate + 0.5,
                    partial(probes.enqueue_rate, target, system, mode),
                )
            )
    return steps + producer_steps(target)


def headline(key: str, metrics: dict[str, Any]) -> str:
    """The one number a progress line shows for a measurement."""
    if "error" in metrics:
        return "ERROR " + str(metrics["error"]).splitlines()[0][:60]
    kind = key.split(":")[0]
    if "qps" in metrics:
        return f"{metrics['qps']:,.0f} q/s"
    if key == "producers:commit-start":
        p50, p95 = metrics.get("p50_ms"), metrics.get("p95_ms")
        return "no latency" if p50 is None or p95 is None else f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"
    if key == "producers:python-bulk":
        return f"slim/worker {metrics['slim_over_worker']:.2f}"
    if kind not in ("latency", "idle"):  # drains and enqueues, and every growth sweep's point
        rate = metrics.get("jobs_per_s")
        return "no rate" if rate is None else f"{rate:,.0f} jobs/s"
    if kind == "latency":
        p50, p99 = metrics.get("p50_ms"), metrics.get("p99_ms")
        if p50 is None or p99 is None:
            return "no latency"
        return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    cpu = metrics.get("idle_cpu_pct")
    return f"idle CPU {cpu:.1f}%" if cpu is not None else "idle CPU ?"


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 60}:{seconds % 60:02d}"


async def execute(
    target: Target, steps: list[Step], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Run ``steps`` ``rounds`` times (round-robin); each step's metrics, one dict per round."""
    results: dict[str, list[dict[str, Any]]] = {step.key: [] for step in steps}
    took: dict[str, list[float]] = {step.key: [] for step in steps}
    loop = asyncio.get_running_loop()
    begun = loop.time()
    total = len(steps) * rounds
    done = 0
    for round_no in range(rounds):
        for index, step in enumerate(steps):
            tag = new_tag()
            t0 = loop.time()
            try:
                metrics = await step.run(tag)
            except BenchError as exc:
                metrics = {"error": str(exc)}
            except Exception as exc:  # noqa: BLE001  (one broken measurement must not lose the run)
                metrics = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                await delete_tagged(target.redis, tag)
            took[step.key].append(loop.time() - t0)
            results[step.key].append(metrics)
            done += 1
            later = steps[index + 1 :] + steps * (rounds - round_no - 1)
            eta = sum(median(took[s.key]) or s.estimate for s in later)
            say(
                f"[{done:>3}/{total}] round {round_no + 1}/{rounds}  {step.label:<30} "
                f"{headline(step.key, metrics):<32} {took[step.key][-1]:5.1f}s  "
                f"elapsed {_clock(loop.time() - begun)}  ETA {_clock(eta)}"
            )
    return results


def label_of(system: str) -> str:
    return SYSTEM_LABELS[system]
