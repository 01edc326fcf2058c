"""``python -m bench.profile --paced RATE``: the worker sampled by py-spy at light load.

The real worker (``arq bench.ours_settings.BenchSettings``, not in burst mode) starts and warms up;
then ``get_user`` jobs are enqueued one by one at RATE a second for ``--seconds`` while py-spy
samples it (``py-spy record --pid``), and the worker is stopped (SIGTERM). Every job must have a
result. The profile shows where a job's CPU goes when the worker is mostly waiting: wake-ups and
round trips rather than the drain's Python per job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from bench.common import ROOT, decode_json, read_arq_results, say
from bench.probes import _paced
from bench.systems import OURS_SETTINGS, until_done
from pgpool_client.enqueue import enqueue_payload

WARM_UP = 200  # jobs run before py-spy attaches


async def record_paced(
    args: argparse.Namespace, env: dict[str, str], redis: Redis, queue: str, max_user_id: int
) -> None:
    """Run the worker, enqueue at ``args.paced`` jobs/s under py-spy, stop the worker."""
    log = Path(args.output).with_suffix(".worker.log")
    with log.open("w") as sink:
        worker = subprocess.Popen(  # noqa: ASYNC220  (a child for the whole measurement)
            [sys.executable, "-m", "arq", OURS_SETTINGS],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        job = {"f": "get_user", "a": [], "k": {"user_id": 1}}
        warm = [f"{queue}-warm-{i}" for i in range(WARM_UP)]
        for job_id in warm:
            await enqueue_payload(redis, queue, job_id, job)
        await until_done(redis, warm, timeout=60)
        count = max(int(args.paced * args.seconds), 1)
        ids = [f"{queue}-{i}" for i in range(count)]
        argv = [
            *(args.py_spy, "record", "--rate", str(args.rate), "--format", "raw"),
            *("--output", str(args.output), "--nonblocking", "--pid", str(worker.pid)),
            *("--duration", str(max(int(args.seconds), 1))),
        ]
        spy = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        say(f"{count:,} get_user jobs at {args.paced:g}/s under py-spy ({args.seconds:g} s)")

        async def send(i: int) -> None:
            user = {"user_id": 1 + i % max_user_id}
            await enqueue_payload(redis, queue, ids[i], {**job, "k": user})

        achieved = await _paced(args.paced, count, send)
        _, err = await spy.communicate()
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed ({spy.returncode}):\n{err.decode()[-3000:]}")
        await until_done(redis, ids, timeout=60)
        done = await read_arq_results(redis, ids, decode_json)
        if len(done) != count:
            raise SystemExit(f"only {len(done)} of {count} jobs have a result")
        say(f"achieved {achieved:,.0f} jobs/s")
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 60)
