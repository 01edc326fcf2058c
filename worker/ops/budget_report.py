"""The fleet's pool registrations against the connection budget, as ``python -m worker budget``
prints them and as ``status`` summarises them (the arithmetic: worker/db/budget.py)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from redis.asyncio import Redis

from jobs.errors import WorkerError
from worker.client import JobClient
from worker.config import Config
from worker.core.exit_codes import EXIT_OK
from worker.db.budget import check, server_usage
from worker.db.budget_registry import Registration, fleet
from worker.db.pool import connect
from worker.ops.output import emit


async def fleet_report(config: Config, redis: Redis, conn: Any) -> dict[str, Any]:
    """The fleet's registrations and the budget, for ``python -m worker budget`` (and status)."""
    now = time.time()
    workers = await fleet(redis, config.queue_name)
    usage = await server_usage(conn)
    # This command's own connection is neither the fleet's nor another client's.
    me = Registration("status", "", 0, "", pool_max=0, pool_open=1, pooled=False, started_at=now)
    result = check(usage, config, me, workers)
    direct = [w for w in workers if not w.pooled]
    return {
        "queue": config.queue_name,
        "workers": [
            {
                "worker": w.worker,
                "pool_max": w.pool_max,
                "pool_open": w.pool_open,
                "via_pooler": w.pooled,
                "up_seconds": round(now - w.started_at, 1),
            }
            for w in workers
        ],
        "fleet": {
            "workers": len(workers),
            "direct_workers": len(direct),
            "pool_max": sum(w.pool_max for w in direct),
            "pool_open": sum(w.pool_open for w in direct),
            "via_pooler_workers": len(workers) - len(direct),
        },
        "budget": {**result.as_dict(), "over_budget_policy": config.pg_pool_over_budget},
    }


async def budget_status(config: Config, redis: Redis) -> dict[str, Any]:
    """``fleet_report`` for ``python -m worker status``; with PostgreSQL unreachable, the
    registrations and the error instead of the server's numbers."""
    try:
        conn = await connect(config.database_url, config.pg_connect_timeout)
    except WorkerError as exc:
        workers = await fleet(redis, config.queue_name)
        return {
            "workers": len(workers),
            "pool_max": sum(w.pool_max for w in workers if not w.pooled),
            "error": str(exc),
        }
    try:
        report = await fleet_report(config, redis, conn)
    finally:
        await conn.close()
    return {**report["fleet"], **report["budget"]}


def render_budget(section: dict[str, Any]) -> str:
    """One line of ``status``: the fleet's pools against what the server allows."""
    if "error" in section:
        return (
            f"connection budget: {section['workers']} registered workers, pools up to "
            f"{section['pool_max']} connections; server unavailable ({section['error']})"
        )
    via = section["via_pooler_workers"]
    pooled = f" (+{via} behind a pooler, not counted)" if via else ""
    return (
        f"connection budget: {section['direct_workers']} workers{pooled} may open "
        f"{section['fleet_pool_max']} of {section['allowance']} connections "
        f"({section['left']} left; max_connections {section['max_connections']}, reserved "
        f"{section['superuser_reserved_connections']}, other clients "
        f"{section['used_by_other_clients']}"
        + (
            f", PG_CONNECTION_BUDGET {section['pg_connection_budget']})"
            if section["pg_connection_budget"]
            else ")"
        )
    )


async def cmd_budget(config: Config, _: argparse.Namespace) -> int:
    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        async with JobClient.connect(config) as client:
            emit(await fleet_report(config, client.redis, conn))
    finally:
        await conn.close()
    return EXIT_OK
