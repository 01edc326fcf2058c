"""The dashboard's audit log in PostgreSQL (table ``dashboard_audit``, migration 0004): one row per
action asked for on the dashboard. An allowed action is written ``pending`` before it runs (no row,
no action) and then set to ``ok`` or ``failed``; a refused one is written ``refused`` at once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

# parameters as text either way: the pools with or without a jsonb codec read and write it alike
COLUMNS = (
    "id, at, actor, role, action, target, parameters::text AS parameters, client, outcome, detail"
)
DETAIL_MAX = 500


@dataclass(frozen=True)
class AuditEntry:
    """Who asked for what, and from where (the row's outcome comes later)."""

    actor: str
    role: str
    action: str
    target: str
    parameters: dict[str, Any]
    client: str


async def record(conn: Conn, entry: AuditEntry, outcome: str, detail: str = "") -> int:
    """Write ``entry`` with ``outcome`` (pending, ok, refused, failed); returns the row's id."""
    row_id = await conn.fetchval(
        "INSERT INTO dashboard_audit (actor, role, action, target, parameters, client, outcome,"
        " detail) VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8) RETURNING id",
        entry.actor,
        entry.role,
        entry.action,
        entry.target,
        json.dumps(entry.parameters, default=str),
        entry.client,
        outcome,
        detail[:DETAIL_MAX],
    )
    return int(row_id)


async def finish(conn: Conn, row_id: int, outcome: str, detail: str) -> None:
    """Set a pending row's outcome (ok or failed) and what came of it."""
    await conn.execute(
        "UPDATE dashboard_audit SET outcome = $2, detail = $3 WHERE id = $1",
        row_id,
        outcome,
        detail[:DETAIL_MAX],
    )


async def recent(conn: Conn, limit: int = 50) -> list[dict[str, Any]]:
    """The newest rows first, ``at`` as seconds since 1970 and ``parameters`` decoded."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM dashboard_audit ORDER BY id DESC LIMIT $1",  # noqa: S608  (constant)
        limit,
    )
    return [
        dict(r) | {"at": r["at"].timestamp(), "parameters": json.loads(r["parameters"])}
        for r in rows
    ]
