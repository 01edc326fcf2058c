"""``python -m worker run --processes N``: N ``arq worker.Settings`` processes under one supervisor.

* Each child is a plain ``arq`` worker process with the supervisor's environment (its own pool,
  its own registration in the connection budget); ``arq worker.Settings`` stays the single-process
  way to run the worker.
* A child that exits while the supervisor is not stopping is restarted after a backoff (1 s,
  doubling up to 30 s; back to 1 s once a child has run for 30 s), with the reason logged: the
  signal that killed it (SIGKILL: often the kernel's OOM killer) or its exit status.
* SIGTERM or SIGINT to the supervisor is forwarded once, as SIGTERM, to every child: each drains
  as ``arq`` does on SIGTERM (stops taking jobs, lets running ones finish within SHUTDOWN_GRACE,
  re-queues the rest). The supervisor exits when all children have exited: 0 if every one drained
  cleanly (status 0), else 1. A child still running SHUTDOWN_GRACE + 30 s later is SIGKILLed.
* Children run in their own session (a terminal's Ctrl-C reaches only the supervisor, which
  forwards it once) and, on Linux, get SIGTERM if the supervisor itself dies.

Single-threaded: signals wake a ``select`` through ``signal.set_wakeup_fd``; no polling.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.config import Config
from worker.core.logs import JsonFormatter, use_json

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a child that ran this long resets the backoff
KILL_AFTER_GRACE = 30.0
PR_SET_PDEATHSIG = 1


def default_processes() -> int:
    return os.cpu_count() or 1


def describe_exit(status: int) -> str:
    """``Popen.returncode`` in words."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        hint = " (the kernel's OOM killer, or an operator)" if -status == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {status}"


def _child_setup() -> None:  # pragma: no cover  (runs in the child between fork and exec)
    """On Linux, ask for SIGTERM when the supervisor dies, so that no worker outlives it."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Slot:
    """One of the N places for a worker process."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # consecutive short-lived runs
    restart_at: float | None = None
    final_status: int | None = None  # the exit status after the stop was forwarded


class Supervisor:
    """Starts, restarts and stops ``processes`` worker processes running ``command``."""

    def __init__(
        self,
        processes: int,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        shutdown_grace: float = 25.0,
        slot_env: Callable[[int], Mapping[str, str]] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("--processes must be at least 1")
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.shutdown_grace = shutdown_grace
        self.slot_env = slot_env
        self.slots = [Slot(i + 1) for i in range(processes)]
        self.stopping = False
        self.kill_at: float | None = None
        self.killed = False

    # ---- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT and every child has exited; the exit status."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        previous = {
            sig: signal.signal(sig, _wake)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        }
        old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        try:
            logger.info(
                "supervisor (pid %d) starting %d worker processes: %s",
                os.getpid(),
                len(self.slots),
                " ".join(self.command),
            )
            for slot in self.slots:
                self._start(slot)
            while not self._done():
                self._wait(read_fd)
                self._reap()
                self._tick()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(read_fd)
            os.close(write_fd)
        return self._status()

    def _done(self) -> bool:
        return self.stopping and all(slot.proc is None for slot in self.slots)

    def _wait(self, read_fd: int) -> None:
        """Sleep until a signal arrives or the next restart or kill deadline is due."""
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if self.kill_at is not None:
            due.append(self.kill_at)
        timeout = max(min(due) - time.monotonic(), 0.0) if due else None
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:
            return
        with contextlib.suppress(BlockingIOError):
            for number in os.read(read_fd, 1024):
                if number in (signal.SIGTERM, signal.SIGINT):
                    self.stop(signal.Signals(number))

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.proc is None:
                continue
            status = slot.proc.poll()
            if status is None:
                continue
            pid, lived = slot.proc.pid, time.monotonic() - slot.started_at
            slot.proc = None
            if self.stopping:
                slot.final_status = status
                log = logger.info if status == 0 else logger.warning
                log("worker %d (pid %d) %s after the stop", slot.index, pid, describe_exit(status))
                continue
            slot.failures = 0 if lived >= STABLE_AFTER else slot.failures + 1
            delay = (
                min(BACKOFF_BASE * 2 ** (slot.failures - 1), BACKOFF_MAX) if slot.failures else 0
            )
            slot.restart_at = time.monotonic() + delay
            logger.warning(
                "worker %d (pid %d) %s after %.1fs; restarting it in %.1fs",
                slot.index,
                pid,
                describe_exit(status),
                lived,
                delay,
            )

    def _tick(self) -> None:
        now = time.monotonic()
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    logger.error(
                        "worker %d (pid %d) still running %.0fs after SIGTERM: SIGKILL",
                        slot.index,
                        slot.proc.pid,
                        self.shutdown_grace + KILL_AFTER_GRACE,
                    )
                    self.killed = True
                    slot.proc.kill()
        if self.stopping:
            return
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)

    def _start(self, slot: Slot) -> None:
        slot.restart_at = None
        slot.started_at = time.monotonic()
        env = self.env if self.slot_env is None else {**self.env, **self.slot_env(slot.index)}
        slot.proc = subprocess.Popen(
            self.command,
            env=env,
            start_new_session=True,
            preexec_fn=_child_setup if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        logger.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Forward SIGTERM to every child once; the run ends when they have all exited."""
        if self.stopping:
            logger.info("%s again: still draining (at most SHUTDOWN_GRACE)", sig.name)
            return
        self.stopping = True
        self.kill_at = time.monotonic() + self.shutdown_grace + KILL_AFTER_GRACE
        running = [slot for slot in self.slots if slot.proc is not None]
        logger.info(
            "supervisor got %s: SIGTERM to %d worker processes, waiting for them to drain",
            sig.name,
            len(running),
        )
        for slot in self.slots:
            slot.restart_at = None
            if slot.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGTERM)

    def _status(self) -> int:
        statuses = [slot.final_status for slot in self.slots if slot.final_status is not None]
        clean = not self.killed and all(status == 0 for status in statuses)
        logger.info(
            "supervisor exiting: %d worker processes stopped, %s",
            len(statuses),
            "all drained cleanly" if clean else f"exit statuses {statuses}",
        )
        return 0 if clean else 1

    def pids(self) -> list[int]:
        return [slot.proc.pid for slot in self.slots if slot.proc is not None]


def _wake(signum: int, frame: object) -> None:
    """A Python-level handler, so that the signal is delivered (the wakeup fd carries it)."""


def worker_command(settings: str = "worker.Settings") -> list[str]:
    """The single-process worker command the supervisor runs N times."""
    return [sys.executable, "-m", "arq", settings]


def configure_supervisor_logging(level: str, log_format: str) -> None:
    """The supervisor's lines, in the workers' format (LOG_FORMAT), marked as the supervisor's."""
    handler = logging.StreamHandler()
    text = logging.Formatter("%(asctime)s: supervisor: %(message)s", "%H:%M:%S")
    handler.setFormatter(JsonFormatter() if use_json(log_format) else text)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def per_process_env(config: Config) -> Callable[[int], dict[str, str]]:
    """What differs between the children: each its own METRICS_PORT (the base port, plus one per
    process after the first), since N processes cannot share one listening port."""

    def env(index: int) -> dict[str, str]:
        if not config.metrics_port:
            return {}
        return {"METRICS_PORT": str(config.metrics_port + index - 1)}

    return env


def run(processes: int, settings: str, config: Config) -> int:
    """Supervise ``processes`` workers of ``settings`` with this process's environment."""
    configure_supervisor_logging(config.log_level, config.log_format)
    env = dict(os.environ)
    # The children import the project by module path: run from anywhere.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    command = worker_command(settings)
    return Supervisor(processes, command, env, config.shutdown_grace, per_process_env(config)).run()
