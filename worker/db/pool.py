"""PostgreSQL: the worker's one asyncpg pool, the schema check, migrations and database creation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from worker.core.masking import mask_url
from worker.errors import (
    START_POSTGRES,
    DatabaseMissing,
    DatabaseUnavailable,
    SchemaMissing,
    connection_advice,
)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from worker.config import Config

    AnyConnection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
APPLICATION_NAME = "pgpool-worker"
# Any constant works; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 0x6A6F6273

REQUIRED_TABLES = ("users", "dead_letters", "job_effects", "job_claims", "job_outbox")
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


async def init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Per-connection setup: json and jsonb columns decode to Python values."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def session_settings(config: Config) -> dict[str, str]:
    """The server-side timeouts of every worker connection, in milliseconds."""
    return {
        "statement_timeout": str(int(config.pg_statement_timeout * 1000)),
        "lock_timeout": str(int(config.pg_lock_timeout * 1000)),
        "idle_in_transaction_session_timeout": str(
            int(config.pg_idle_in_transaction_timeout * 1000)
        ),
    }


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset on release without PG_RESET_SESSION: nothing beyond what asyncpg always
    does first (an open transaction rolled back, listeners dropped). Jobs keep no session state
    (``SET LOCAL``, transaction advisory locks), the rule a transaction pooler imposes anyway, so
    the reset query (``RESET ALL``, ``UNLISTEN *``...) would be one more round trip per job."""


async def create_pool(config: Config) -> asyncpg.Pool[asyncpg.Record]:
    """Open the worker's pool; raises DatabaseUnavailable with a masked URL when it cannot.

    Behind a transaction pooler (PG_TRANSACTION_POOLING) the timeouts are not startup parameters,
    which PgBouncer refuses ("unsupported startup parameter") and which would hold for one server
    connection only: each job transaction sets them instead (``Resources.transaction_timeouts``).
    """
    server_settings = {"application_name": APPLICATION_NAME}
    if not config.pg_transaction_pooling:
        server_settings.update(session_settings(config))
    try:
        return await asyncpg.create_pool(
            config.database_url,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            timeout=config.pg_connect_timeout,
            command_timeout=config.pg_statement_timeout + 5,
            # 0: unnamed statements only, re-parsed on every run (PgBouncer < 1.21 in transaction
            # mode would hand a named one to a server connection that never prepared it).
            statement_cache_size=config.pg_statement_cache_size,
            server_settings=server_settings,
            init=init_connection,
            reset=None if config.pg_reset_session else keep_session,
        )
    except CONNECT_ERRORS as exc:
        raise _unavailable(config.database_url, exc) from None


async def create_reader_pool(
    config: Config, role: str, max_size: int = 2
) -> asyncpg.Pool[asyncpg.Record]:
    """A small pool of a process that reads the worker's tables beside the workers (``role``:
    "dashboard"), named ``pgpool-worker-<role>`` in ``pg_stat_activity``; it opens connections
    only when asked (min size 0). Raises DatabaseUnavailable with a masked URL when it cannot."""
    try:
        return await asyncpg.create_pool(
            config.database_url,
            min_size=0,
            max_size=max_size,
            timeout=config.pg_connect_timeout,
            statement_cache_size=config.pg_statement_cache_size,  # PgBouncer-safe
            server_settings={"application_name": f"{APPLICATION_NAME}-{role}"},
        )
    except CONNECT_ERRORS as exc:
        raise _unavailable(config.database_url, exc) from None


async def check_ready(pool: asyncpg.Pool[asyncpg.Record], config: Config) -> None:
    """Fail clearly unless the worker's tables exist. Whether the server has room for the pool is
    the fleet's connection budget (worker/db/budget.py)."""
    async with pool.acquire(timeout=config.pg_acquire_timeout) as conn:
        for table in REQUIRED_TABLES:
            if await conn.fetchval("SELECT to_regclass($1)", table) is None:
                raise SchemaMissing(table=table, url=mask_url(config.database_url))


def _unavailable(url: str, exc: BaseException) -> DatabaseUnavailable | DatabaseMissing:
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return DatabaseMissing(name=database_name(url), url=mask_url(url))
    reason = f"{type(exc).__name__}: {str(exc).rstrip('.')}." if str(exc) else type(exc).__name__
    advice = connection_advice(exc, "DATABASE_URL", START_POSTGRES)
    if "unsupported startup parameter" in str(exc):
        advice = (
            "DATABASE_URL points at a connection pooler (PgBouncer) that refuses the worker's "
            "session settings: set PG_TRANSACTION_POOLING=true (and PG_STATEMENT_CACHE_SIZE=0 "
            "before PgBouncer 1.21); see docs/scaling.md."
        )
    return DatabaseUnavailable(url=mask_url(url), reason=reason, advice=advice)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_name(url: str) -> str:
    """The database a URL names (the path), or the user name as libpq defaults it."""
    parts = urlsplit(url)
    return parts.path.lstrip("/") or parts.username or "postgres"


async def connect(url: str, timeout: float) -> asyncpg.Connection[asyncpg.Record]:
    """One connection for administration and the operator commands; raises DatabaseUnavailable
    with a masked URL. Unnamed statements only, so that it works through PgBouncer in transaction
    mode too (a named one could meet another client's of the same name on the server connection)."""
    try:
        return await asyncpg.connect(url, timeout=timeout, statement_cache_size=0)
    except CONNECT_ERRORS as exc:
        raise _unavailable(url, exc) from None


async def check_postgres(config: Config, url: str | None = None) -> None:
    """Connect once to ``url`` (default DATABASE_URL); raises DatabaseUnavailable if it cannot."""
    conn = await connect(url or config.database_url, config.pg_connect_timeout)
    await conn.close()


async def ensure_database(url: str, timeout: float = 5.0) -> bool:
    """Create the database named in ``url`` if it is missing; True if it was created."""
    name = database_name(url)
    admin = await connect(with_database(url, "postgres"), timeout)
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        # Identifiers cannot be bind parameters; quote_ident makes the name safe.
        quoted = await admin.fetchval("SELECT quote_ident($1)", name)
        await admin.execute(f"CREATE DATABASE {quoted}")
        logger.info("created database %s", name)
        return True
    finally:
        await admin.close()


async def migrate(conn: asyncpg.Connection[asyncpg.Record]) -> list[str]:
    """Apply the migrations not yet applied, in order, under an advisory lock; return their names."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.stem in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
            applied.append(path.stem)
            logger.info("applied migration %s", path.stem)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


# What the worker's own role may do: read users and deactivate them, keep its ledgers. No DDL, no
# DELETE on users, nothing on other tables. `python -m worker setup --worker-role NAME` applies it.
WORKER_GRANTS = (
    "GRANT CONNECT ON DATABASE {database} TO {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT ON users TO {role}",
    "GRANT UPDATE (is_active) ON users TO {role}",
    "GRANT SELECT, INSERT, UPDATE ON job_effects, job_claims TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON dead_letters TO {role}",
    "GRANT SELECT ON schema_migrations TO {role}",
    # The outbox relay claims, marks and prunes rows; a job may enqueue another in its transaction.
    "GRANT SELECT, INSERT, UPDATE, DELETE ON job_outbox TO {role}",
    (
        "GRANT EXECUTE ON FUNCTION enqueue_job(text, jsonb, text, timestamptz, text, text, text)"
        " TO {role}"
    ),
    # The dashboard (compose runs it as this role) writes its audit log; it never deletes from it.
    "GRANT SELECT, INSERT, UPDATE ON dashboard_audit TO {role}",
)


async def grant_worker_role(conn: AnyConnection, role: str, password: str | None) -> bool:
    """Create the worker's least-privilege login role if missing, set its password, and grant it
    exactly ``WORKER_GRANTS``; True if the role was created."""
    quoted_role = await conn.fetchval("SELECT quote_ident($1)", role)
    database = await conn.fetchval("SELECT quote_ident(current_database())")
    created = not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    if created:
        await conn.execute(f"CREATE ROLE {quoted_role} LOGIN")
    if password:
        # Passwords cannot be bind parameters in ALTER ROLE; quote_literal makes it a safe literal.
        literal = await conn.fetchval("SELECT quote_literal($1)", password)
        await conn.execute(f"ALTER ROLE {quoted_role} PASSWORD {literal}")
    for grant in WORKER_GRANTS:
        await conn.execute(grant.format(role=quoted_role, database=database))
    return created
