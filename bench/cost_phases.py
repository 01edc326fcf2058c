"""The measurements of ``bench.cost`` (see its docstring): a tree's light load, its full load at
one C and its bulk enqueue, and the figures shared by the trees of a round (the raw pool without
its reset query, and the floor)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arq.constants import result_key_prefix
from redis.asyncio import Redis

from bench.common import ROOT, JobTiming, decode_json, delete_tagged, new_tag, percentile
from bench.common import read_arq_results as results_of
from bench.database import BenchDatabase
from bench.options import pool_for
from bench.paired_trees import Tree, TreeError
from bench.probes import limit, running
from bench.procs import Monitored, child_env, cpu_seconds
from bench.systems import BenchError, Target, ours_bulk_enqueue, until_done
from pgpool_client.enqueue import enqueue_payload, wake
from worker.queue.flow_admin import WHOLE_QUEUE, pause, resume

CONCURRENCIES = (10, 50, 100)


@dataclass(frozen=True)
class CostOptions:
    against: str | None
    rounds: int
    quick: bool
    rate: float
    seconds: float
    jobs: int  # per full-load drain
    bulk: int  # jobs of the bulk enqueue
    warmup: int  # jobs every worker runs before it is measured
    idle_seconds: float
    raw_seconds: float  # each raw pool run
    users: int
    database_url: str
    redis_url: str
    output: Path | None


@dataclass(frozen=True)
class Bench:
    opts: CostOptions
    db: BenchDatabase
    redis: Redis
    target: Target  # for bench.probes.limit

    def payload(self, rnd: random.Random) -> dict[str, Any]:
        return {"f": "get_user", "a": [], "k": {"user_id": rnd.randint(1, self.db.max_user_id)}}

    def worker(self, tree: Tree, queue: str, name: str, settings: dict[str, str]) -> Monitored:
        env = {
            "PYTHONPATH": str(tree.path),
            "DATABASE_URL": self.db.url,
            "REDIS_URL": self.opts.redis_url,
            "QUEUE_NAME": queue,
            "CRON_DEACTIVATE": "",  # no scheduled job inside a measurement
            "METRICS_PORT": "0",  # no HTTP endpoint: nothing to collide with on a shared box
            **settings,
        }
        env = {k: v for k, v in child_env(env).items() if not k.startswith("OTEL_")}
        argv = ["-m", "arq", "worker.Settings"]
        return Monitored(argv=argv, env=env, workdir=tree.path, name=name)

    async def warm_up(self, queue: str, tag: str) -> None:
        """``warmup`` jobs (at least one) run by the worker ``running`` has just started."""
        rnd = random.Random(1)
        ids = [f"{tag}-warm{i}" for i in range(max(self.opts.warmup, 1))]
        await enqueue_payload(self.redis, queue, ids[0], self.payload(rnd))
        await until_done(self.redis, ids[:1], 90)
        await ours_bulk_enqueue(self.redis, queue, [(i, self.payload(rnd)) for i in ids[1:]])
        await until_done(self.redis, ids, 90 + len(ids) / 50)


def _pid(proc: Monitored) -> int:
    assert proc.proc is not None
    return proc.proc.pid


def _cpu(proc: Monitored) -> float:
    found = cpu_seconds(_pid(proc))
    if found is None:
        raise BenchError(f"{proc.name} exited:\n{proc.log_tail()}")
    return found


async def _finished(bench: Bench, ids: list[str], proc: Monitored) -> list[JobTiming]:
    await until_done(bench.redis, ids, 60 + len(ids) / 50)
    timings = await results_of(bench.redis, ids, decode_json)
    failed = sum(1 for t in timings if not t.success)
    if len(timings) != len(ids) or failed:
        raise BenchError(
            f"{len(timings)} of {len(ids)} results, {failed} failed:\n{proc.log_tail()}"
        )
    return timings


async def light(bench: Bench, tree: Tree) -> dict[str, Any]:
    """A worker at its defaults: idle CPU %, then the paced phase."""
    opts, tag = bench.opts, new_tag()
    queue = f"{tag}:queue"
    rnd = random.Random(5)
    proc = bench.worker(tree, queue, f"{tag}-{tree.label}-light", {})
    try:
        async with running(proc, bench.warm_up(queue, tag)):
            loop = asyncio.get_running_loop()
            await asyncio.sleep(1.0)  # start-up and warm-up work settle
            c0, t0 = _cpu(proc), loop.time()
            await asyncio.sleep(opts.idle_seconds)
            idle = 100 * (_cpu(proc) - c0) / (loop.time() - t0)
            n = max(int(opts.rate * opts.seconds), 1)
            ids = [f"{tag}-p{i}" for i in range(n)]
            c0, t0 = _cpu(proc), loop.time()
            for i, job_id in enumerate(ids):
                delay = t0 + i / opts.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await enqueue_payload(bench.redis, queue, job_id, bench.payload(rnd))
            sent = loop.time() - t0
            timings = await _finished(bench, ids, proc)
            cpu, wall = _cpu(proc) - c0, loop.time() - t0
    finally:
        await delete_tagged(bench.redis, tag)
    e2e = [float(t.finished - t.enqueued) for t in timings]
    return {
        "idle_cpu_pct": idle,
        "paced_jobs": n,
        "paced_completed": len(timings),
        "paced_rate": n / sent if sent > 0 else None,
        "paced_cpu_pct": 100 * cpu / wall,
        "paced_us_per_job": 1e6 * cpu / n,
        "paced_p50_ms": percentile(e2e, 50),
        "paced_p95_ms": percentile(e2e, 95),
    }


async def full(bench: Bench, tree: Tree, c: int) -> dict[str, Any]:
    """A worker at C, warmed up; N jobs queued while the queue is paused, then resumed."""
    opts, tag = bench.opts, new_tag()
    queue = f"{tag}:queue"
    rnd = random.Random(c)
    settings = {"WORKER_MAX_JOBS": str(c), "PG_POOL_MAX_SIZE": str(pool_for(c))}
    proc = bench.worker(tree, queue, f"{tag}-{tree.label}-c{c}", settings)
    ids = [f"{tag}-f{i}" for i in range(opts.jobs)]
    try:
        async with running(proc, bench.warm_up(queue, tag)):
            await pause(bench.redis, queue, [WHOLE_QUEUE])
            await ours_bulk_enqueue(bench.redis, queue, [(i, bench.payload(rnd)) for i in ids])
            await asyncio.sleep(0.3)  # the enqueue's wake-ups answered (by empty claim rounds)
            if await bench.redis.exists(*(result_key_prefix + i for i in ids[:100])):
                raise TreeError(details=f"{tree.label} tree: its worker ran jobs of a paused queue")
            c0 = _cpu(proc)
            await resume(bench.redis, queue, [WHOLE_QUEUE])
            async with bench.redis.pipeline(transaction=False) as pipe:
                wake(pipe, queue)  # as an enqueue does: an idle consumer looks at once
                await pipe.execute()
            timings = await _finished(bench, ids, proc)
            cpu = _cpu(proc) - c0
    finally:
        await delete_tagged(bench.redis, tag)
    window = (max(t.finished for t in timings) - min(t.started for t in timings)) / 1000
    return {
        f"full_{c}_jobs": opts.jobs,
        f"full_{c}_completed": len(timings),
        f"full_{c}_jobs_per_s": opts.jobs / window if window > 0 else None,
        f"full_{c}_us_per_job": 1e6 * cpu / opts.jobs,
        f"full_{c}_cpu_pct": 100 * cpu / window if window > 0 else None,
    }


async def _json_of(
    name: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> Any:
    """A bench subprocess's one JSON line (it is waited for, or killed by its PID)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(f"{name} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise BenchError(f"{name} failed: {stderr.decode(errors='replace')[-1500:]}")
    return json.loads(stdout)


async def bulk(bench: Bench, tree: Tree) -> dict[str, Any]:
    """The tree's ``JobClient.enqueue_many`` over ``--bulk`` jobs (bench/cost_bulk.py)."""
    tag = new_tag()
    env = {"PYTHONPATH": str(tree.path), "DATABASE_URL": bench.db.url}
    env |= {"REDIS_URL": bench.opts.redis_url, "QUEUE_NAME": f"{tag}:queue"}
    argv = [sys.executable, "-P", str(ROOT / "bench/cost_bulk.py"), "--prefix", tag]
    argv += ["--jobs", str(bench.opts.bulk), "--max-id", str(bench.db.max_user_id)]
    try:
        timeout = 120 + bench.opts.bulk / 1000
        found = await _json_of("bench/cost_bulk.py", argv, tree.path, child_env(env), timeout)
    finally:
        await delete_tagged(bench.redis, tag)
    if not found.pop("worker_from_cwd"):
        raise TreeError(details=f"{tree.label} tree: bulk enqueue imported another tree's worker")
    if found["added"] != found["jobs"] or found["queued"] != found["jobs"]:
        raise BenchError(f"bulk enqueue: {found['queued']} of {found['jobs']} jobs queued")
    if not (found["duplicates_refused"] and found["invalid_refused"]):
        raise TreeError(details=f"{tree.label} tree: enqueue_many took duplicate or invalid jobs")
    return {f"bulk_{k}": v for k, v in found.items()}


async def shared(bench: Bench) -> dict[str, Any]:
    """Once per round: the raw pool without its reset query at each C, and the floor."""
    found: dict[str, Any] = {}
    for c in CONCURRENCIES:
        raw = await limit(bench.target, "pool-keep", c)
        found[f"raw_{c}_qps"] = raw["qps"]
        found[f"raw_{c}_us_per_query"] = 1e4 * raw["client_cpu_pct"] / raw["qps"]
    opts = bench.opts
    argv = [sys.executable, "-m", "bench.cost_floor", "--dsn", bench.db.url]
    argv += ["--redis-url", opts.redis_url, "--max-id", str(bench.db.max_user_id)]
    argv += ["--rate", str(opts.rate), "--seconds", str(opts.seconds)]
    workdir = bench.target.opts.workdir
    floor = await _json_of("bench.cost_floor", argv, workdir, child_env({}), 60 + opts.seconds)
    return found | {f"floor_{k}": v for k, v in floor.items()}
