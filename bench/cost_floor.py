"""The floor of a job's cost at light load, in its own process on uvloop
(``python -m bench.cost_floor``): ``--rate`` ticks a second for ``--seconds``, each tick exactly the
three round trips a job costs the worker when it is alone: one to Redis (a ``PING`` on a bare
redis-py ``Connection``: ``send_packed_command`` + ``read_response``), one ``fetchrow`` of the
bench query on one asyncpg connection, and one more to Redis. No queue, no pool, no framework:
what is left is the event loop's and the drivers' own cost.

Prints one JSON object: ticks, the achieved rate, this process's CPU % of one core over the paced
window and its CPU µs per tick.
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
from redis.asyncio.connection import Connection, parse_url

from bench.common import QUERY


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    redis = Connection(**parse_url(args.redis_url))
    await redis.connect()  # type: ignore[no-untyped-call]
    conn = await asyncpg.connect(args.dsn, timeout=10)
    ping = redis.pack_command("PING")
    rnd = random.Random(3)
    try:
        for _ in range(10):  # connections warm, the statement prepared, before the clock starts
            await redis.send_packed_command(ping, check_health=False)
            await redis.read_response()
            await conn.fetchrow(QUERY, 1)
        ticks = max(int(args.rate * args.seconds), 1)
        loop = asyncio.get_running_loop()
        cpu0, t0 = time.process_time(), loop.time()
        for i in range(ticks):
            delay = t0 + i / args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await redis.send_packed_command(ping, check_health=False)
            await redis.read_response()
            await conn.fetchrow(QUERY, rnd.randint(1, args.max_id))
            await redis.send_packed_command(ping, check_health=False)
            await redis.read_response()
        wall, cpu = loop.time() - t0, time.process_time() - cpu0
    finally:
        await conn.close()
        await redis.disconnect()
    return {
        "ticks": ticks,
        "achieved_rate": ticks / wall,
        "cpu_pct": 100 * cpu / wall,
        "us_per_tick": 1e6 * cpu / ticks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost_floor", description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-id", type=int, required=True)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.max_id < 1:
        parser.error("--rate, --seconds and --max-id must be positive")
    sys.stdout.write(json.dumps(uvloop.run(measure(args))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
