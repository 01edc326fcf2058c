"""``python -m worker check``, ``setup`` and ``seed``: the services answer; the database, its
schema, the worker's role and demo users."""

from __future__ import annotations

import argparse
import asyncio
import os

from worker.config import Config
from worker.core.exit_codes import EXIT_OK
from worker.core.masking import mask_url
from worker.db.pool import (
    check_postgres,
    connect,
    ensure_database,
    grant_worker_role,
    migrate,
    with_database,
)
from worker.ops.output import emit
from worker.ops.seed import seed_users
from worker.queue.connect import check_redis


async def cmd_check(config: Config, _: argparse.Namespace) -> int:
    await check_postgres(config, url=with_database(config.database_url, "postgres"))
    await check_redis(config)
    emit(
        {"postgres": mask_url(config.database_url), "redis": mask_url(config.redis_url), "ok": True}
    )
    return EXIT_OK


async def cmd_setup(config: Config, args: argparse.Namespace) -> int:
    created = await ensure_database(config.database_url, config.pg_connect_timeout)
    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        applied = await migrate(conn)
        users = int(await conn.fetchval("SELECT count(*) FROM users"))
        seeded = 0
        if users == 0 and args.seed > 0:
            seeded = await seed_users(conn, args.seed, show=not args.quiet)
        role = None
        if args.worker_role:
            password = os.environ.get(args.worker_role_password_env)
            made = await grant_worker_role(conn, args.worker_role, password)
            role = {"name": args.worker_role, "created": made}
    finally:
        await conn.close()
    emit(
        {
            "database_created": created,
            "migrations_applied": applied,
            "users_before": users,
            "users_seeded": seeded,
            "worker_role": role,
        }
    )
    return EXIT_OK


async def cmd_seed(config: Config, args: argparse.Namespace) -> int:
    conn = await connect(config.database_url, config.pg_connect_timeout)
    try:
        started = asyncio.get_running_loop().time()
        added = await seed_users(conn, args.users, batch=args.batch, show=not args.quiet)
        seconds = asyncio.get_running_loop().time() - started
        total = int(await conn.fetchval("SELECT count(*) FROM users"))
    finally:
        await conn.close()
    emit({"users_added": added, "users_total": total, "seconds": round(seconds, 2)})
    return EXIT_OK
