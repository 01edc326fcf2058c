"""Worker subprocesses and what the bench samples while they run: CPU time and peak RSS (from
/proc), the bench database's Postgres backends (pg_stat_activity) and the queue's length."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg

from bench.common import ROOT, now
from worker.config import Config

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 0.02  # CPU time and memory (reads of /proc)
QUERY_EVERY = 5  # samples between reads of pg_stat_activity and the queue's length (0.1 s)
# The worker's own variables: none of the bench machine's values may leak into a measured worker.
_WORKER_VARIABLES = {name.upper() for name in Config.model_fields}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_seconds() -> float:
    """CPU seconds of every local PostgreSQL process so far, ended backends included (the
    postmaster's children's time). Only meaningful as a difference, on a box of its own."""
    total = 0.0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue
        if not stat[stat.index("(") + 1 :].startswith("postgres"):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total


def memory_kb(pid: int, field_name: str = "VmHWM") -> int | None:
    """A memory figure of /proc/<pid>/status in kB (VmHWM: peak RSS; VmRSS: current)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a measured process: the bench's variables only, PYTHONPATH at the repo."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in _WORKER_VARIABLES and not key.startswith(("BENCH_", "PG"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@dataclass
class Sample:
    at: float
    cpu: float | None
    peak_kb: int | None
    backends: int | None
    queued: int | None


@dataclass
class Monitored:
    """A subprocess started in a scratch directory (so no ``.env`` file is read), sampled every
    ``SAMPLE_EVERY`` seconds (the database and the queue every ``QUERY_EVERY`` samples) until it
    ends or is stopped. Stop it with ``stop()`` (by its PID)."""

    argv: Sequence[str]
    env: Mapping[str, str]
    workdir: Path
    name: str
    admin_url: str | None = None  # a server URL to read pg_stat_activity from
    database: str | None = None
    queue_length: Callable[[], Awaitable[int]] | None = None
    samples: list[Sample] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float | None = None
    proc: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None
    _admin: asyncpg.Connection[asyncpg.Record] | None = None
    _sampler: asyncio.Task[None] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        if self.admin_url is not None and self.database is not None:
            self._admin = await asyncpg.connect(self.admin_url, timeout=5)
        self.started_at = now()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.argv,
            cwd=self.workdir,
            env=dict(self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._sampler = asyncio.create_task(self._sample_loop())

    async def _sample_loop(self) -> None:
        assert self.proc is not None
        pid = self.proc.pid
        count = 0
        while self.proc.returncode is None:
            backends = queued = None
            count += 1
            if count % QUERY_EVERY == 1 and self._admin is not None:
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    backends = int(
                        await self._admin.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                            self.database,
                        )
                    )
            if count % QUERY_EVERY == 1 and self.queue_length is not None:
                with contextlib.suppress(Exception):
                    queued = await self.queue_length()
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self.samples.append(Sample(now(), cpu, memory_kb(pid), backends, queued))
            await asyncio.sleep(SAMPLE_EVERY)

    async def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit by itself; its exit code, or None after ``timeout``."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None
        self.ended_at = now()
        return code

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM by PID, then SIGKILL after ``grace`` seconds; idempotent."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            self.ended_at = self.ended_at or now()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        return None if proc is None else proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # What the samples say about a window [t0, t1] (epoch seconds).

    def cpu_percent(self, t0: float, t1: float) -> float | None:
        points: list[tuple[float, float]] = [
            (s.at, s.cpu) for s in self.samples if s.cpu is not None
        ]
        if len(points) < 2 or t1 <= t0:
            return None
        a, b = _interpolate(points, t0), _interpolate(points, t1)
        if a is None or b is None:
            return None
        return 100.0 * (b - a) / (t1 - t0)

    def peak_rss_mb(self) -> float | None:
        peaks = [s.peak_kb for s in self.samples if s.peak_kb is not None]
        return max(peaks) / 1024 if peaks else None

    def backends_max(self) -> int | None:
        counts = [s.backends for s in self.samples if s.backends is not None]
        return max(counts) if counts else None


def _interpolate(points: list[tuple[float, float]], at: float) -> float | None:
    """Linear interpolation of a sampled counter, clamped to the first and last samples."""
    before = [(t, v) for t, v in points if t <= at]
    after = [(t, v) for t, v in points if t >= at]
    if not before:
        return after[0][1] if after else None
    if not after:
        return before[-1][1]
    (t0, v0), (t1, v1) = before[-1], after[0]
    if t1 == t0:
        return v0
    return v0 + (v1 - v0) * (at - t0) / (t1 - t0)
