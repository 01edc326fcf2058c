"""How ``arq worker.Settings`` ends on an error its operator can fix: one line that names the
problem and the fix (in LOG_FORMAT), exit code 2, instead of a traceback.

arq's command imports the settings, then runs the worker; a bad setting (at import), a missing
schema or an over-large pool (in startup), or a Redis that does not answer (arq's first PING, or
its last write on shutdown) ends that command with an exception nothing catches. worker/settings.py
installs ``report_and_exit`` as ``sys.excepthook``, which Python calls only then; any other
exception keeps Python's own report.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from redis.exceptions import RedisError

from jobs.errors import WorkerError
from worker.config import Config
from worker.core.exit_codes import EXIT_USAGE
from worker.core.logs import JsonFormatter, use_json
from worker.core.masking import mask_url
from worker.queue.connect import redis_unavailable
from worker.queue.connection import OutageRetry


class RedisStoppedAnswering(WorkerError):
    """Redis at {url} did not answer while the worker stopped ({reason}). Outcomes not yet recorded
    were not written: their jobs run again when their lease ends (JOB_LEASE)."""


class _Context:
    """What the hook knows: LOG_FORMAT and, once it loaded, the configuration."""

    log_format = "auto"
    config: Config | None = None


def install(log_format: str = "auto", config: Config | None = None) -> None:
    """Make ``report_and_exit`` the process's hook for uncaught exceptions (again with the
    configuration once it loaded)."""
    _Context.log_format = log_format
    _Context.config = config
    sys.excepthook = report_and_exit


def user_error(exc: BaseException) -> WorkerError | None:
    """The error an operator can fix that ``exc`` is, or None (a bug: Python's report)."""
    if isinstance(exc, WorkerError):
        return exc
    config = _Context.config
    if isinstance(exc, RedisError) and config is not None:
        if OutageRetry.shutdown_started:
            reason = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
            return RedisStoppedAnswering(url=mask_url(config.redis_url), reason=reason)
        return redis_unavailable(config, exc)
    return None


def one_line(message: str, log_format: str) -> str:
    """``message`` as the worker's last log line: a JSON object, or ``error: ...`` as text."""
    if not use_json(log_format):
        return f"error: {message}"
    record = logging.LogRecord("worker", logging.ERROR, __file__, 0, message, None, None)
    return JsonFormatter().format(record)


def report_and_exit(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """``sys.excepthook``: an operator's error as one line and exit 2; anything else as Python
    reports it."""
    error = user_error(exc)
    if error is None:
        sys.__excepthook__(kind, exc, tb)
        return
    sys.stderr.write(one_line(str(error), _Context.log_format) + "\n")
    sys.stderr.flush()
    sys.exit(EXIT_USAGE)
