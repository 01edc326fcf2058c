"""TLS to both services: ``rediss://`` with a password and a verified host name, and PostgreSQL
with ``sslmode=verify-full``. Each runs as a private server started here, with a certificate for
"localhost" from a throwaway CA (made with the openssl command), and the real worker runs jobs through it."""

from __future__ import annotations

import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import RunWorker
from worker.client import JobClient
from worker.config import Config
from worker.db.pool import APPLICATION_NAME, check_postgres, connect, ensure_database, migrate
from worker.errors import DatabaseUnavailable, RedisUnavailable
from worker.queue.connect import check_redis
from worker.runtime.lifecycle import shutdown

pytestmark = pytest.mark.acceptance

REDIS_PASSWORD = f"s3cret-{uuid.uuid4().hex}"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
STARTUP_TIMEOUT = 10.0


def flags(options: dict[str, str]) -> list[str]:
    return [arg for name, value in options.items() for arg in (f"--{name}", value)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server's certificate chain, for "localhost" only
    key: Path


@dataclass(frozen=True)
class Ca:
    cert: Path
    key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    """A throwaway certificate authority."""
    directory = tmp_path_factory.mktemp("ca")
    ca = Ca(cert=directory / "ca.pem", key=directory / "ca.key")
    openssl(
        "req",
        "-x509",
        *EC_KEY,
        "-keyout",
        str(ca.key),
        "-out",
        str(ca.cert),
        "-days",
        "2",
        "-subj",
        "/CN=pgpool-worker test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    return ca


def write_tls_files(ca: Ca, directory: Path) -> TlsFiles:
    """The CA and a server certificate for "localhost" only, signed by it."""
    files = TlsFiles(
        ca=directory / "ca.pem", cert=directory / "server.crt", key=directory / "server.key"
    )
    shutil.copyfile(ca.cert, files.ca)
    csr, extensions = directory / "server.csr", directory / "server.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    openssl("req", *EC_KEY, "-keyout", str(files.key), "-out", str(csr), "-subj", "/CN=localhost")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-CAcreateserial",
        "-out",
        str(files.cert),
        "-days",
        "2",
        "-extfile",
        str(extensions),
    )
    files.key.chmod(0o600)
    return files


# -- Redis ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path

    def url(self, host: str = "localhost", password: str = REDIS_PASSWORD) -> str:
        return f"rediss://:{password}@{host}:{self.port}/0"


def wait_for_tls(proc: subprocess.Popen[bytes], port: int, ca: Path, log: Path) -> None:
    """Until a TLS handshake with the server (verified as "localhost") succeeds."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited with {proc.returncode}: {log.read_text()}")
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname="localhost"),
            ):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server does not accept TLS on {port}: {log.read_text()}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_redis(tls_ca: Ca, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A private redis-server speaking only TLS (no plain port), with a password."""
    directory = tmp_path_factory.mktemp("redis-tls")
    files = write_tls_files(tls_ca, directory)
    port = free_port()
    log = directory / "redis.log"
    options = {
        "port": "0",  # TLS only: no plain-text port at all
        "tls-port": str(port),
        "tls-cert-file": str(files.cert),
        "tls-key-file": str(files.key),
        "tls-ca-cert-file": str(files.ca),
        "tls-auth-clients": "no",
        "requirepass": REDIS_PASSWORD,
        "save": "",
        "appendonly": "no",
        "dir": str(directory),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "-::1", *flags(options)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_tls(proc, port, files.ca, log)
        yield TlsRedis(port=port, ca=files.ca)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def redis_config(config: Config, url: str, ca: Path | None) -> Config:
    return config.model_copy(
        update={"redis_url": url, "redis_ca_file": None if ca is None else str(ca)}
    )


async def refusal(config: Config) -> str:
    """The message of check_redis' RedisUnavailable, checked to carry no password."""
    with pytest.raises(RedisUnavailable) as caught:
        await check_redis(config)
    message = str(caught.value)
    assert REDIS_PASSWORD not in message and "wrong-" not in message
    return message


async def test_rediss_with_password_runs_jobs(
    config: Config,
    run_worker: RunWorker,
    users: list[asyncpg.Record],
    tls_redis: TlsRedis,
) -> None:
    cfg = redis_config(config, tls_redis.url(), tls_redis.ca)
    await check_redis(cfg)
    async with JobClient.connect(cfg) as client:
        handle = await client.get_user(users[3]["id"])
        missing = await client.get_user(99_999)
        worker = await run_worker(config=cfg)
        assert worker.jobs_complete == 2 and worker.jobs_failed == 0
        user = await handle.result(timeout=1)
        assert user is not None and user.model_dump() == dict(users[3])
        assert await missing.result(timeout=1) is None


async def test_rediss_verifies_the_host_name(config: Config, tls_redis: TlsRedis) -> None:
    await check_redis(redis_config(config, tls_redis.url("localhost"), tls_redis.ca))
    message = await refusal(redis_config(config, tls_redis.url("127.0.0.1"), tls_redis.ca))
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "mismatch" in message and "127.0.0.1" in message


async def test_rediss_wrong_password_is_refused_clearly(
    config: Config, tls_redis: TlsRedis
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    message = await refusal(redis_config(config, tls_redis.url(password=wrong), tls_redis.ca))
    assert "AuthenticationError" in message and "password" in message
    assert "rediss://:***@localhost" in message


async def test_rediss_without_ca_file_refuses_a_self_signed_server(
    config: Config, tls_redis: TlsRedis
) -> None:
    message = await refusal(redis_config(config, tls_redis.url(), None))
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "self-signed certificate" in message


# -- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsPostgres:
    port: int
    ca: Path

    def url(self, database: str, host: str = "localhost") -> str:
        return (
            f"postgresql://postgres@{host}:{self.port}/{database}"
            f"?sslmode=verify-full&sslrootcert={self.ca}"
        )


def as_postgres(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def checked(result: subprocess.CompletedProcess[str], what: str, log: Path | None = None) -> None:
    if result.returncode != 0:
        extra = log.read_text() if log is not None and log.exists() else ""
        pytest.fail(f"{what} failed ({result.returncode}): {result.stdout}{result.stderr}{extra}")


@pytest.fixture(scope="module")
def tls_postgres(tls_ca: Ca) -> Iterator[TlsPostgres]:
    """A private PostgreSQL 15 cluster that accepts only TLS over TCP (hostssl), trust auth."""
    # pytest's tmp dirs are private to root; the cluster's owner must be able to enter this one.
    root = Path(tempfile.mkdtemp(prefix="pg-tls-"))
    shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "postgres.log"
    files = write_tls_files(tls_ca, root)
    for path in (files.ca, files.cert, files.key):
        shutil.chown(path, "postgres", "postgres")
    try:
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        checked(as_postgres(*initdb, "--no-sync", "--no-instructions", cwd=root), "initdb")
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "hostssl all all ::1/128 trust\n"
        )
        port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "ssl": "on",
            "ssl_cert_file": str(files.cert),
            "ssl_key_file": str(files.key),
            "fsync": "off",
        }
        options = ["-p", str(port), "-k", str(root)]
        options += [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "20"]
        checked(as_postgres(*pg_ctl, "-o", shlex.join(options), "start", cwd=root), "start", log)
        yield TlsPostgres(port=port, ca=files.ca)
    finally:
        if (data / "postmaster.pid").exists():  # stop this cluster only (by its data directory)
            stop = as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate", cwd=root
            )
            assert stop.returncode == 0, stop.stderr
        shutil.rmtree(root, ignore_errors=True)


async def test_postgres_verify_full_runs_jobs_over_tls(
    config: Config, run_worker: RunWorker, tls_postgres: TlsPostgres
) -> None:
    url = tls_postgres.url("jobs_tls")
    assert await ensure_database(url)
    conn = await connect(url, timeout=5)
    try:
        await migrate(conn)
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        user_id = await conn.fetchval(
            "INSERT INTO users (email, name) VALUES ('tls@example.com', 'Tee Ellis') RETURNING id"
        )
        seen: list[asyncpg.Record] = []

        async def shutdown_after_looking(ctx: dict[str, Any]) -> None:
            # The worker's pool is still open here: how does the server see its connections?
            seen.extend(
                await conn.fetch(
                    "SELECT a.pid, s.ssl, s.version FROM pg_stat_activity a"
                    " JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
                    APPLICATION_NAME,
                )
            )
            await shutdown(ctx)

        cfg = config.model_copy(update={"database_url": url})
        async with JobClient.connect(cfg) as client:
            handle = await client.get_user(user_id)
            worker = await run_worker(config=cfg, on_shutdown=shutdown_after_looking)
            user = await handle.result(timeout=1)
    finally:
        await conn.close()
    assert worker.jobs_complete == 1 and worker.jobs_failed == 0
    assert user is not None and (user.id, user.email) == (user_id, "tls@example.com")
    assert len(seen) >= 1, "the worker's pool had no connection open"
    assert all(row["ssl"] and row["version"].startswith("TLS") for row in seen), seen


async def test_postgres_verify_full_checks_the_host_name(
    config: Config, tls_postgres: TlsPostgres
) -> None:
    await check_postgres(config, tls_postgres.url("postgres"))
    with pytest.raises(DatabaseUnavailable) as caught:
        await check_postgres(config, tls_postgres.url("postgres", host="127.0.0.1"))
    message = str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message and "mismatch" in message, message
    assert f"127.0.0.1:{tls_postgres.port}/postgres" in message
