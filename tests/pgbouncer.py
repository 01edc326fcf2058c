"""A real PgBouncer (Debian's ``pgbouncer`` package, ``make test-deps``) for the tests: started on a
free loopback port with its ini in a temp dir, in transaction pooling mode, stopped by its PID.

PgBouncer refuses to run as root: as root it runs as ``postgres`` (or ``nobody``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

SERVER_POOL_SIZE = 4  # server connections per database: fewer than the worker's pool on purpose


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) to drop to when running as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no postgres or nobody user to run PgBouncer as")


class PgBouncer:
    """One PgBouncer process in front of the server of ``server_url``."""

    def __init__(self, server_url: str, pool_mode: str = "transaction") -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed: run `make test-deps` (apt-get)")
        self.binary = binary
        self.server = urlsplit(server_url)
        self.pool_mode = pool_mode
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this PgBouncer's."""
        parts = urlsplit(database_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def log_path(self) -> Path:
        return self.dir / "pgbouncer.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self) -> Path:
        user = unquote(self.server.username or "postgres")
        password = unquote(self.server.password or "")
        target = f"host={self.server.hostname or '127.0.0.1'} port={self.server.port or 5432}"
        if password:
            target += f" user={user} password={password}"
        (self.dir / "users.txt").write_text(f'"{user}" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = {target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {SERVER_POOL_SIZE}\n"
            "max_client_conn = 500\n"
            f"logfile = {self.log_path}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        return ini

    def start(self, timeout: float = 10.0) -> PgBouncer:
        ini = self._write_config()
        ids = unprivileged_ids()
        if ids is not None:
            os.chmod(self.dir, 0o777)  # private; the dropped user writes here
            for path in self.dir.iterdir():
                os.chmod(path, 0o644)
        uid, gid = ids if ids is not None else (None, None)
        self.proc = subprocess.Popen(
            [self.binary, str(ini)],
            user=uid,
            group=gid,
            extra_groups=[] if ids is not None else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"pgbouncer did not listen in {timeout:g}s:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # SIGINT: shut down now, without waiting clients
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
