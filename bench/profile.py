"""``python -m bench.profile`` (``make bench-profile``): where a job's time goes in this worker.

Enqueues N ``get_user`` jobs, then runs the real worker (``arq bench.ours_settings.BenchSettings
--burst``) under py-spy, sampling its Python stacks while it drains them. Prints the functions with
the largest share of samples, on their own (self) and with what they call (inclusive), grouped into
the parts of a job (asyncpg, Redis client, pydantic, JSON, asyncio, this worker's code); writes the
same tables to ``<output>.md`` (bench/results/profile.md) and the raw collapsed stacks to
``--output`` (bench/results/profile.txt, not kept in git) for a flame graph (``flamegraph.pl`` or
https://www.speedscope.app).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from bench.common import ROOT, decode_json, delete_tagged, new_tag, out, read_arq_results, say
from bench.database import prepare
from bench.options import default_urls
from bench.procs import child_env
from bench.profile_paced import record_paced
from bench.report import table
from bench.systems import OURS_SETTINGS, ours_bulk_enqueue

# Which part of the work a sampled frame belongs to (first match wins). py-spy writes frames as
# "function (path/file.py:line)", the path relative to its package; native code (uvloop's loop,
# asyncpg's protocol) is counted in the Python frame that called it: arq's Worker.run is where the
# event loop runs, so its own samples are the loop's I/O and callbacks.
PARTS = (
    ("event loop (uvloop, native)", r"^Worker\.run \((.*/)?arq/worker\.py"),
    ("asyncpg", r"\((.*/)?asyncpg/"),
    ("Redis client", r"\((.*/)?redis/"),
    ("pydantic", r"\((.*/)?pydantic"),
    ("JSON", r"\((.*/)?json/|orjson"),
    ("prometheus", r"\((.*/)?prometheus_client/"),
    ("asyncio", r"\((.*/)?asyncio/|uvloop"),
    ("arq", r"\((.*/)?arq/"),
    ("this worker", r"\((.*/)?(worker|jobs)/"),
    ("async with (contextlib)", r"\((.*/)?contextlib\.py"),
    ("imports (start-up)", r"importlib"),
)


def part_of(frame: str) -> str:
    """The part of the work of one frame ("function (path:line)")."""
    for name, pattern in PARTS:
        if re.search(pattern, frame):
            return name
    return "other"


def _short(frame: str) -> str:
    """``fn (/long/path/site-packages/pkg/mod.py:12)`` -> ``fn (pkg/mod.py:12)``; this checkout's
    files relative to it."""
    frame = frame.replace(f"({ROOT}/", "(")
    return re.sub(r"\(.*/(site-packages|lib/python3\.\d+)/", "(", frame)


def summarize(stacks: Iterable[str], top: int) -> tuple[int, list[list[str]], list[list[str]]]:
    """From py-spy's raw output (``frame;frame;... count`` lines): total samples, the rows of the
    parts table (self time by part) and of the top frames table."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        parts[part_of(stack.split(";")[-1])] += n
    if not total:
        return 0, [], []
    part_rows = [[name, f"{100 * n / total:.1f} %"] for name, n in parts.most_common()]
    frame_rows = [
        [frame, f"{100 * own[frame] / total:.1f} %", f"{100 * inclusive[frame] / total:.1f} %"]
        for frame, _ in own.most_common(top)
    ]
    return total, part_rows, frame_rows


async def enqueue(redis: Redis, queue: str, jobs: int, max_user_id: int) -> None:
    await ours_bulk_enqueue(
        redis,
        queue,
        [
            (f"{queue}-{i}", {"f": "get_user", "a": [], "k": {"user_id": 1 + i % max_user_id}})
            for i in range(jobs)
        ],
    )


def record(py_spy: str, env: dict[str, str], rate: int, raw: Path) -> None:
    argv = [
        *(py_spy, "record", "--rate", str(rate), "--format", "raw", "--output", str(raw)),
        *("--nonblocking", "--", sys.executable, "-m", "arq", OURS_SETTINGS, "--burst"),
    ]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"py-spy failed ({done.returncode}):\n{done.stderr[-3000:]}")


async def run(args: argparse.Namespace) -> Path:
    db = await prepare(args.database_url, args.users, show=True)
    redis = Redis.from_url(args.redis_url)
    tag = new_tag()
    queue = f"{tag}:queue"
    try:
        env = child_env(
            {
                "DATABASE_URL": db.url,
                "REDIS_URL": args.redis_url,
                "QUEUE_NAME": queue,
                "CRON_DEACTIVATE": "",
                "METRICS_PORT": "0",
                "WORKER_MAX_JOBS": str(args.concurrency),
                "PG_POOL_MAX_SIZE": str(min(args.concurrency, 20)),
            }
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        if args.paced:
            await record_paced(args, env, redis, queue, db.max_user_id)
            return Path(args.output)
        await enqueue(redis, queue, args.jobs, db.max_user_id)
        say(f"draining {args.jobs:,} get_user jobs under py-spy (max_jobs {args.concurrency})")
        await asyncio.to_thread(record, args.py_spy, env, args.rate, args.output)
        ids = [f"{queue}-{i}" for i in range(args.jobs)]
        done = await read_arq_results(redis, ids, decode_json)
        if len(done) != args.jobs:
            raise SystemExit(f"only {len(done)} of {args.jobs} jobs have a result")
    finally:
        await delete_tagged(redis, tag)
        await redis.aclose()
    return Path(args.output)


def main(argv: list[str] | None = None) -> int:
    database_url, redis_url = default_urls()
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=30_000, help="jobs drained (default 30,000)")
    parser.add_argument("--concurrency", type=int, default=50, help="WORKER_MAX_JOBS (default 50)")
    parser.add_argument("--users", type=int, default=100_000, help="users in the bench table")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="frames listed")
    parser.add_argument(
        "--paced",
        type=float,
        metavar="JOBS_PER_S",
        help="light load instead of a drain: enqueue one by one at this rate (bench/profile_paced.py)",
    )
    parser.add_argument("--seconds", type=float, default=20, help="--paced: how long (20)")
    parser.add_argument("--database-url", default=database_url, help="the bench database")
    parser.add_argument("--redis-url", default=redis_url, help="the bench's Redis logical db")
    parser.add_argument("--output", type=Path, help="raw stacks (bench/results/profile.txt)")
    args = parser.parse_args(argv)
    if args.output is None:
        stem = "profile-paced" if args.paced else "profile"
        args.output = ROOT / f"bench/results/{stem}.txt"
    if args.paced is not None and args.paced <= 0:
        parser.error("--paced must be above 0")
    args.py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
        "py-spy"
    )
    if args.py_spy is None:
        raise SystemExit("py-spy is not installed: run `make install` (it is a dev dependency)")
    raw = asyncio.run(run(args))
    total, parts, frames = summarize(raw.read_text().splitlines(), args.top)
    load = (
        f"`get_user` jobs enqueued one by one at {args.paced:g}/s for {args.seconds:g} s (light "
        f"load; `--paced {args.paced:g}`), the worker at `WORKER_MAX_JOBS` {args.concurrency}"
        if args.paced
        else f"{args.jobs:,} `get_user` jobs drained at `WORKER_MAX_JOBS` {args.concurrency}"
    )
    text = (
        f"# Where a job's time goes\n\nGenerated by `make bench-profile` (`python -m bench.profile`) "
        f"on {datetime.now(UTC):%Y-%m-%d %H:%M UTC}: {load}, the worker sampled by py-spy at {args.rate}/s: "
        f"{total:,} samples of its Python stacks (native code counts in its Python caller).\n\n"
        "## Self time by part of the work\n\n"
        + table(["part", "share of samples"], parts)
        + "\n## Top frames by self time\n\n"
        + table(["frame", "self", "inclusive"], frames)
    )
    summary = raw.with_suffix(".md")
    summary.write_text(text)
    out("\n" + text + f"\nwrote {summary} and {raw}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
