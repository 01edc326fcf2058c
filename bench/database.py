"""The bench database: created if missing, migrated, seeded to the wanted number of users."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from worker.db.pool import connect, database_name, ensure_database, migrate, with_database
from worker.ops.seed import seed_users


@dataclass(frozen=True)
class BenchDatabase:
    url: str
    admin_url: str  # same server, database "postgres": the samplers' connections are not counted
    name: str
    users: int
    max_user_id: int
    server_version: str
    max_connections: int


async def prepare(url: str, users: int, show: bool = True) -> BenchDatabase:
    """Create, migrate and seed (only when the table has fewer than ``users`` rows)."""
    await ensure_database(url)
    conn = await connect(url, 10)
    try:
        await migrate(conn)
        count = int(await conn.fetchval("SELECT count(*) FROM users"))
        if count < users:
            await seed_users(conn, users - count, show=show)
            await conn.execute("VACUUM ANALYZE users")
        count = int(await conn.fetchval("SELECT count(*) FROM users"))
        max_id = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM users"))
        version = str(await conn.fetchval("SHOW server_version"))
        max_conn = int(await conn.fetchval("SELECT current_setting('max_connections')::int"))
    finally:
        await conn.close()
    return BenchDatabase(
        url=url,
        admin_url=with_database(url, "postgres"),
        name=database_name(url),
        users=count,
        max_user_id=max(max_id, 1),
        server_version=version,
        max_connections=max_conn,
    )


async def free_connections(admin_url: str) -> int:
    """Connections the server can still accept for ordinary roles right now."""
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        free = await conn.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
    finally:
        await conn.close()
    return int(free)
