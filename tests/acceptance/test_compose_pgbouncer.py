"""The `pgbouncer` compose profile: its service definition, and its entrypoint run for real (the
PgBouncer it configures, with SCRAM logins as the worker's role, carries the worker's jobs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml

from tests.acceptance.test_compose import (
    COMPOSE_FILE,
    OPERATOR_ENVIRONMENT,
    environment_of,
    interpolate,
)
from tests.conftest import RunWorker
from tests.pgbouncer import free_port, unprivileged_ids
from worker.client import JobClient
from worker.config import Config
from worker.db.pool import grant_worker_role

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "pgbouncer" / "entrypoint.sh"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    found = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    assert isinstance(found, dict)
    return found


def test_pgbouncer_is_an_opt_in_profile_with_a_health_check(services: dict[str, Any]) -> None:
    bouncer = services["pgbouncer"]
    assert bouncer["profiles"] == ["pgbouncer"]
    assert bouncer["healthcheck"]["test"] == ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "6432"]
    assert bouncer["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "setup": {"condition": "service_completed_successfully"},
    }
    env = environment_of(bouncer)
    assert env["POOL_MODE"] == "transaction"
    assert "profiles" not in services["worker"], "the worker runs with or without PgBouncer"


def test_the_worker_url_points_at_pgbouncer_when_told(services: dict[str, Any]) -> None:
    url = environment_of(services["worker"])["DATABASE_URL"] or ""
    direct = urlsplit(interpolate(url, OPERATOR_ENVIRONMENT))
    assert (direct.hostname, direct.port) == ("postgres", 5432)
    told = {
        **OPERATOR_ENVIRONMENT,
        "WORKER_DATABASE_HOST": "pgbouncer",
        "WORKER_DATABASE_PORT": "6432",
    }
    pooled = urlsplit(interpolate(url, told))
    assert (pooled.hostname, pooled.port, pooled.username) == ("pgbouncer", 6432, "worker_app")


@pytest.fixture
async def scram_role(pool: asyncpg.Pool[asyncpg.Record]) -> AsyncIterator[tuple[str, str]]:
    """The worker's least-privilege role with a (SCRAM) password, dropped afterwards."""
    role, password = f"worker_pgb_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex[:12]}"
    async with pool.acquire() as conn:
        await grant_worker_role(conn, role, password)
    yield role, password
    async with pool.acquire() as conn:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def entrypoint_bouncer(config: Config, scram_role: tuple[str, str]) -> Iterator[int]:
    """deploy/pgbouncer/entrypoint.sh run as in the container (unprivileged), on a free port.

    The unprivileged user runs a copy in the temporary directory: the clone itself may sit in a
    directory that only its owner can enter (a private home, a ``mktemp -d`` folder)."""
    role, password = scram_role
    server = urlsplit(config.database_url)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-compose-"))
    ids = unprivileged_ids()
    if ids is not None:
        os.chmod(workdir, 0o777)  # the dropped user writes its ini here
    script = workdir / ENTRYPOINT.name  # all the entrypoint needs: it writes the rest itself
    shutil.copyfile(ENTRYPOINT, script)
    script.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "") + ":/usr/sbin",
        "PGBOUNCER_DIR": str(workdir / "run"),
        "POSTGRES_HOST": server.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(server.port or 5432),
        "DB_USER": role,
        "DB_PASSWORD": password,
        "LISTEN_PORT": str(port),
    }
    log = (workdir / "pgbouncer.log").open("wb")
    proc = subprocess.Popen(
        ["sh", str(script)],
        env=env,
        user=ids[0] if ids else None,
        group=ids[1] if ids else None,
        extra_groups=[] if ids else None,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (workdir / "pgbouncer.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the entrypoint's PgBouncer did not listen"
                time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the entrypoint execs pgbouncer: this is its PID
            proc.wait(10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_jobs_run_through_the_profiles_pgbouncer(
    config: Config,
    scram_role: tuple[str, str],
    entrypoint_bouncer: int,
    run_worker: RunWorker,
    users: list[asyncpg.Record],
) -> None:
    role, password = scram_role
    parts = urlsplit(config.database_url)
    url = urlunsplit(
        (parts.scheme, f"{role}:{password}@127.0.0.1:{entrypoint_bouncer}", parts.path, "", "")
    )
    pooled = config.model_copy(
        update={"database_url": url, "pg_transaction_pooling": True, "pg_statement_cache_size": 0}
    )
    async with JobClient.connect(pooled) as client:
        read = await client.get_user(users[0]["id"])
        write = await client.deactivate_inactive_users(datetime.now(UTC) - timedelta(days=100))
        worker = await run_worker(config=pooled)
        assert (worker.jobs_complete, worker.jobs_failed) == (2, 0)
        found = await read.result(timeout=1)
        assert found is not None and found.id == users[0]["id"]
        assert (await write.result(timeout=1)).deactivated > 0
    wrong = url.replace(password, "not-the-password")
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
        await asyncpg.connect(wrong, statement_cache_size=0)
