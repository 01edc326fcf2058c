"""A private Redis master, its replica and one Sentinel on free loopback ports, each a
``redis-server`` process in a temp dir, stopped by PID; the master can be SIGKILLed for a failover."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.pgbouncer import free_port

MASTER_NAME = "mymaster"


class SentinelSetup:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-"))
        self.master_port, self.replica_port, self.sentinel_port = (free_port() for _ in range(3))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _server(self, name: str, *args: str) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            ["redis-server", *args], cwd=self.dir, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def start(self) -> SentinelSetup:
        common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        self._server("master", "--port", str(self.master_port), *common)
        self._server(
            "replica",
            *("--port", str(self.replica_port), *common),
            *("--replicaof", "127.0.0.1", str(self.master_port)),
        )
        # The replica first: the sentinel learns it from the master's INFO when it connects
        # (otherwise only some 10 s later), and without it has no one to promote.
        self._until(self.replication_ok, "the replica to sync")
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
        )
        self._server("sentinel", str(conf), "--sentinel")
        self._until(
            lambda: self.master() == self.master_port and self.sentinel_knows_replica(),
            "the sentinel to know the master and its replica",
        )
        return self

    def _until(self, probe: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                logs = {name: (self.dir / f"{name}.log").read_text() for name in self.procs}
                self.stop()
                raise RuntimeError(f"timed out waiting for {what}: {logs}")
            time.sleep(0.05)

    def _ask(self, port: int, *command: str) -> list[str]:
        """One command in RESP over a plain socket (no client library needed here)."""
        payload = f"*{len(command)}\r\n" + "".join(f"${len(c)}\r\n{c}\r\n" for c in command)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(payload.encode())
                data = sock.recv(65536).decode(errors="replace")
        except OSError:
            return []
        return [line for line in data.split("\r\n") if line and line[0] not in "*$"]

    def master(self) -> int | None:
        """The master's port as the sentinel reports it."""
        answer = self._ask(self.sentinel_port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return int(answer[1]) if len(answer) == 2 and answer[1].isdigit() else None

    def replication_ok(self) -> bool:
        info = " ".join(self._ask(self.replica_port, "INFO", "replication"))
        return "master_link_status:up" in info

    def sentinel_knows_replica(self) -> bool:
        answer = self._ask(self.sentinel_port, "SENTINEL", "replicas", MASTER_NAME)
        return str(self.replica_port) in answer

    def kill_master(self) -> None:
        self.procs["master"].send_signal(signal.SIGKILL)
        self.procs["master"].wait(10)

    @property
    def sentinels(self) -> str:
        return f"127.0.0.1:{self.sentinel_port}"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
