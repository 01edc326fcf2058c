"""Jobs on the ``users`` table. Each acquires one pooled connection and releases it on every path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.context import JobContext, connection, write_effect
from jobs.models import (
    CountUsersArgs,
    DeactivatedUsers,
    DeactivateInactiveArgs,
    GetUserArgs,
    ListUsersArgs,
    SearchUsersArgs,
    User,
    UserCount,
    UserList,
    UserPage,
)

if TYPE_CHECKING:
    import asyncpg

GET_USER = "SELECT id, email, name, is_active, created_at, last_seen_at FROM users WHERE id = $1"
LIST_USERS = """
SELECT id, email, name, is_active, created_at, last_seen_at FROM users
WHERE id > $1
  AND ($2::boolean IS NULL OR is_active = $2)
  AND ($3::timestamptz IS NULL OR created_at >= $3)
  AND ($4::timestamptz IS NULL OR created_at < $4)
ORDER BY id
LIMIT $5
"""
SEARCH_BY = {
    "email": "SELECT id, email, name, is_active, created_at, last_seen_at FROM users WHERE lower(email) LIKE $1 ESCAPE '\\' "
    "ORDER BY lower(email), id LIMIT $2",
    "name": "SELECT id, email, name, is_active, created_at, last_seen_at FROM users WHERE lower(name) LIKE $1 ESCAPE '\\' "
    "ORDER BY lower(name), id LIMIT $2",
}
COUNT_USERS = "SELECT count(*) FROM users WHERE ($1::boolean IS NULL OR is_active = $1)"
DEACTIVATE_INACTIVE = """
UPDATE users SET is_active = false
WHERE is_active AND coalesce(last_seen_at, created_at) < $1
"""


def _user(row: asyncpg.Record) -> User:
    return User.model_validate(dict(row))


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching values that start with ``prefix`` taken literally (``%``, ``_`` escaped)."""
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def get_user(ctx: JobContext, args: GetUserArgs) -> User | None:
    """One user by id, or None if there is no such user."""
    async with connection(ctx) as conn:
        row = await conn.fetchrow(GET_USER, args.user_id)
    return None if row is None else _user(row)


async def list_users(ctx: JobContext, args: ListUsersArgs) -> UserPage:
    """A page of users in id order (keyset pagination), filtered by activity and creation time."""
    async with connection(ctx) as conn:
        rows = await conn.fetch(
            LIST_USERS, args.after_id, args.active, args.created_from, args.created_to, args.limit
        )
    users = [_user(row) for row in rows]
    next_after_id = users[-1].id if len(users) == args.limit else None
    return UserPage(users=users, next_after_id=next_after_id)


async def search_users(ctx: JobContext, args: SearchUsersArgs) -> UserList:
    """Users whose email or name starts with a prefix (case-insensitive), at most ``limit``."""
    async with connection(ctx) as conn:
        rows = await conn.fetch(SEARCH_BY[args.field], like_prefix(args.prefix), args.limit)
    return UserList(users=[_user(row) for row in rows])


async def count_users(ctx: JobContext, args: CountUsersArgs) -> UserCount:
    """How many users there are, optionally only active or inactive ones."""
    async with connection(ctx) as conn:
        count: int = await conn.fetchval(COUNT_USERS, args.active)
    return UserCount(count=count)


async def deactivate_inactive_users(
    ctx: JobContext, args: DeactivateInactiveArgs
) -> DeactivatedUsers:
    """Deactivate, in one transaction, active users not seen since ``seen_before``.

    Effectively once: a re-run with the same idempotency key (default: the job id) returns the
    first run's result and changes nothing.
    """
    async with write_effect(ctx, args.idempotency_key) as effect:
        if effect.done:
            return DeactivatedUsers.model_validate(effect.stored)
        status = await effect.conn.execute(DEACTIVATE_INACTIVE, args.seen_before)
        result = DeactivatedUsers(deactivated=int(status.split()[-1]), seen_before=args.seen_before)
        effect.result = result.model_dump(mode="json")
    return result
