"""Every job's result checked against SQL on the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from jobs import users as jobs
from jobs.context import connection
from jobs.models import (
    CountUsersArgs,
    DeactivateInactiveArgs,
    GetUserArgs,
    ListUsersArgs,
    SearchUsersArgs,
)

pytestmark = pytest.mark.integration

Ctx = dict[str, Any]
if TYPE_CHECKING:
    Pool = asyncpg.Pool[asyncpg.Record]


async def test_get_user_returns_the_row(job_ctx: Ctx, users: list[asyncpg.Record]) -> None:
    row = users[3]
    user = await jobs.get_user(job_ctx, GetUserArgs(user_id=row["id"]))
    assert user is not None
    assert user.model_dump() == dict(row)


async def test_get_user_missing_is_none(job_ctx: Ctx, users: list[asyncpg.Record]) -> None:
    assert await jobs.get_user(job_ctx, GetUserArgs(user_id=10_000)) is None


async def test_list_users_pages_through_everything(
    job_ctx: Ctx, users: list[asyncpg.Record]
) -> None:
    seen: list[int] = []
    after = 0
    while True:
        page = await jobs.list_users(job_ctx, ListUsersArgs(after_id=after, limit=7))
        seen += [u.id for u in page.users]
        if page.next_after_id is None:
            break
        after = page.next_after_id
    assert seen == [r["id"] for r in users]


async def test_list_users_filters_match_sql(
    job_ctx: Ctx, users: list[asyncpg.Record], pool: Pool
) -> None:
    start = users[5]["created_at"]
    end = users[20]["created_at"]
    args = ListUsersArgs(active=True, created_from=start, created_to=end, limit=1000)
    page = await jobs.list_users(job_ctx, args)
    expected = await pool.fetch(
        "SELECT id FROM users WHERE is_active AND created_at >= $1 AND created_at < $2 ORDER BY id",
        start,
        end,
    )
    assert [u.id for u in page.users] == [r["id"] for r in expected]
    assert page.users and page.next_after_id is None


async def test_search_users_by_email_prefix_is_case_insensitive(
    job_ctx: Ctx, users: list[asyncpg.Record], pool: Pool
) -> None:
    result = await jobs.search_users(job_ctx, SearchUsersArgs(prefix="USER1", limit=100))
    expected = await pool.fetch(
        "SELECT id FROM users WHERE lower(email) LIKE 'user1%' ORDER BY lower(email), id"
    )
    assert [u.id for u in result.users] == [r["id"] for r in expected]
    assert len(result.users) == 11  # user1, user10..user19


async def test_search_users_by_name_respects_limit(
    job_ctx: Ctx, users: list[asyncpg.Record]
) -> None:
    result = await jobs.search_users(job_ctx, SearchUsersArgs(prefix="zoë", field="name", limit=3))
    assert len(result.users) == 3
    assert all(u.name.startswith("Zoë Ünicode") for u in result.users)


async def test_search_wildcards_are_literal(job_ctx: Ctx, users: list[asyncpg.Record]) -> None:
    assert (await jobs.search_users(job_ctx, SearchUsersArgs(prefix="%"))).users == []
    assert (await jobs.search_users(job_ctx, SearchUsersArgs(prefix="_"))).users == []
    found = await jobs.search_users(job_ctx, SearchUsersArgs(prefix="o'brien_100%"))
    assert [u.email for u in found.users] == ["o'brien_100%@example.com"]


async def test_count_users_matches_sql(
    job_ctx: Ctx, users: list[asyncpg.Record], pool: Pool
) -> None:
    for active in (None, True, False):
        expected = await pool.fetchval(
            "SELECT count(*) FROM users WHERE $1::boolean IS NULL OR is_active = $1", active
        )
        result = await jobs.count_users(job_ctx, CountUsersArgs(active=active))
        assert result.count == expected
    assert (await jobs.count_users(job_ctx, CountUsersArgs())).count == len(users)


async def test_deactivate_inactive_users_in_one_transaction(
    job_ctx: Ctx, users: list[asyncpg.Record], pool: Pool
) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=200)
    stale = "SELECT count(*) FROM users WHERE is_active AND coalesce(last_seen_at, created_at) < $1"
    expected = await pool.fetchval(stale, cutoff)
    assert expected > 0
    args = DeactivateInactiveArgs(seen_before=cutoff, idempotency_key=f"first-{uuid.uuid4()}")
    result = await jobs.deactivate_inactive_users(job_ctx, args)
    assert result.deactivated == expected
    assert await pool.fetchval(stale, cutoff) == 0
    other = DeactivateInactiveArgs(seen_before=cutoff, idempotency_key=f"second-{uuid.uuid4()}")
    assert (await jobs.deactivate_inactive_users(job_ctx, other)).deactivated == 0


async def test_same_idempotency_key_applies_the_effect_once(
    job_ctx: Ctx, users: list[asyncpg.Record], pool: Pool
) -> None:
    key = f"nightly-{uuid.uuid4()}"
    early = DeactivateInactiveArgs(
        seen_before=datetime.now(UTC) - timedelta(days=300), idempotency_key=key
    )
    first = await jobs.deactivate_inactive_users(job_ctx, early)
    later = DeactivateInactiveArgs(seen_before=datetime.now(UTC), idempotency_key=key)
    active_before = await pool.fetchval("SELECT count(*) FROM users WHERE is_active")
    second = await jobs.deactivate_inactive_users(job_ctx, later)
    assert second == first  # the stored result of the first run, not a new effect
    assert await pool.fetchval("SELECT count(*) FROM users WHERE is_active") == active_before
    row = await pool.fetchrow(
        "SELECT function, result FROM job_effects WHERE idempotency_key=$1", key
    )
    assert row is not None and row["result"]["deactivated"] == first.deactivated


async def test_injection_strings_are_data(
    job_ctx: Ctx, users: list[asyncpg.Record], pool: Pool
) -> None:
    for prefix in ("' OR 1=1 --", "Robert'); DROP TABLE users;--", "\\", "users; SELECT"):
        result = await jobs.search_users(job_ctx, SearchUsersArgs(prefix=prefix, field="name"))
        assert all(u.name.lower().startswith(prefix.lower()) for u in result.users)
    found = await jobs.search_users(job_ctx, SearchUsersArgs(prefix="Robert'); DROP", field="name"))
    assert len(found.users) == 1
    assert await pool.fetchval("SELECT count(*) FROM users") == len(users)


async def test_jobs_release_connections_on_every_path(
    job_ctx: Ctx, users: list[asyncpg.Record]
) -> None:
    pool = job_ctx["resources"].pool
    with pytest.raises(asyncpg.PostgresError):
        async with connection(job_ctx) as conn:
            await conn.execute("SELECT 1/0")
    await jobs.get_user(job_ctx, GetUserArgs(user_id=1))
    assert pool.get_idle_size() == pool.get_size()
