"""The database's limit without any queue, in its own process on uvloop (``python -m bench.limit``).

``pool``: C coroutines loop on ``async with pool.acquire() as c: await c.fetchrow(QUERY, id)``.
``pool-keep``: the same with the pool's reset query on release skipped, as this worker does by
default (``PG_RESET_SESSION=false``): one round trip per query instead of two.
``connect``: C coroutines loop on connect + fetchrow + close (the connection-per-job anti-pattern).
Prints one JSON object: qps, p50/p99 latency in ms, errors, and this process's CPU %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import asyncpg
import uvloop

from bench.common import QUERY, percentile


async def _pool_worker(
    pool: asyncpg.Pool[asyncpg.Record], deadline: float, max_id: int, lat: list[float]
) -> None:
    rnd = random.Random()
    while (start := time.perf_counter()) < deadline:
        async with pool.acquire() as conn:
            await conn.fetchrow(QUERY, rnd.randint(1, max_id))
        lat.append(time.perf_counter() - start)


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """No reset query (asyncpg still rolls back an open transaction first)."""


async def _connect_worker(dsn: str, deadline: float, max_id: int, lat: list[float]) -> int:
    rnd = random.Random()
    errors = 0
    while (start := time.perf_counter()) < deadline:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                await conn.fetchrow(QUERY, rnd.randint(1, max_id))
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            errors += 1
            await asyncio.sleep(0.05)
            continue
        lat.append(time.perf_counter() - start)
    return errors


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    if args.mode in ("pool", "pool-keep"):
        reset = _keep_session if args.mode == "pool-keep" else None
        async with asyncpg.create_pool(
            args.dsn, min_size=args.pool, max_size=args.pool, reset=reset
        ) as pool:
            # Every connection opened and the statement prepared on each before the clock starts.
            conns = [await pool.acquire() for _ in range(args.pool)]
            for conn in conns:
                await conn.fetchrow(QUERY, 1)
            for conn in conns:
                await pool.release(conn)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            deadline = wall0 + args.duration
            await asyncio.gather(
                *(_pool_worker(pool, deadline, args.max_id, lat) for _ in range(args.concurrency))
            )
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    else:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = wall0 + args.duration
        errors = sum(
            await asyncio.gather(
                *(
                    _connect_worker(args.dsn, deadline, args.max_id, lat)
                    for _ in range(args.concurrency)
                )
            )
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ms = [x * 1000 for x in lat]
    return {
        "qps": len(lat) / wall,
        "queries": len(lat),
        "errors": errors,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "client_cpu_pct": 100 * cpu / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limit", description=__doc__)
    parser.add_argument("mode", choices=("pool", "pool-keep", "connect"))
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--max-id", type=int, required=True)
    args = parser.parse_args(argv)
    result = uvloop.run(measure(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
