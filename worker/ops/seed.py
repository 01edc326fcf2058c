"""Demo data: deterministic users loaded with COPY, with a progress bar."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from worker.ops.progress import Progress

if TYPE_CHECKING:
    import asyncpg

FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Linus",
    "Radia",
    "Tim",
    "Margaret",
    "John",
    "Hedy",
    "Dennis",
    "Niklaus",
    "Sophie",
    "Guido",
    "Élodie",
    "Jürgen",
)
LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Torvalds",
    "Perlman",
    "Berners-Lee",
    "Hamilton",
    "McCarthy",
    "Lamarr",
    "Ritchie",
    "Wirth",
    "Wilson",
    "van Rossum",
    "Durand",
    "Müller",
)
COLUMNS = ("email", "name", "is_active", "created_at", "last_seen_at")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 2 * 365 * 24 * 3600
# Past this many rows it is faster to drop the secondary indexes and build them again after COPY.
REBUILD_THRESHOLD = 100_000
Row = tuple[str, str, bool, datetime, datetime | None]


def demo_users(start: int, count: int, seed: int = 42) -> Iterator[Row]:
    """``count`` users numbered from ``start``: unique emails, 90 % active, some never seen."""
    rng = random.Random(seed + start)
    for n in range(start, start + count):
        created = EPOCH + timedelta(seconds=rng.randrange(SPAN_SECONDS))
        seen = (
            None if rng.random() < 0.1 else created + timedelta(seconds=rng.randrange(90 * 86400))
        )
        name = f"{FIRST[rng.randrange(len(FIRST))]} {LAST[rng.randrange(len(LAST))]}"
        yield (f"user{n}@example.com", name, rng.random() < 0.9, created, seen)


async def seed_users(
    conn: asyncpg.Connection[asyncpg.Record], count: int, batch: int = 50_000, show: bool = True
) -> int:
    """Append ``count`` demo users with COPY in one transaction; returns how many were added."""
    start = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM users")) + 1
    progress = Progress(count, "seeding users") if show else None
    async with conn.transaction():
        rebuild = await _drop_secondary_indexes(conn) if count >= REBUILD_THRESHOLD else []
        for offset in range(0, count, batch):
            size = min(batch, count - offset)
            await conn.copy_records_to_table(
                "users", records=demo_users(start + offset, size), columns=COLUMNS
            )
            if progress:
                progress.advance(size)
        if progress:
            progress.close()
        if rebuild:
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            building = Progress(len(rebuild), "building indexes") if show else None
            for definition in rebuild:
                await conn.execute(definition)
                if building:
                    building.advance(1)
            if building:
                building.close()
    await conn.execute("ANALYZE users")
    return count


async def _drop_secondary_indexes(conn: asyncpg.Connection[asyncpg.Record]) -> list[str]:
    """Drop the users indexes that no constraint needs (inside the caller's transaction); return
    their definitions so that they can be created again."""
    rows = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition"
        " FROM pg_index i WHERE i.indrelid = 'users'::regclass AND NOT i.indisprimary"
    )
    for row in rows:
        quoted = await conn.fetchval("SELECT quote_ident($1)", row["name"])
        await conn.execute(f"DROP INDEX {quoted}")
    return [row["definition"] for row in rows]
