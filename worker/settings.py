"""``arq worker.Settings``: the worker's arguments, read once from the configuration."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, cast

import arq.cli
import uvloop
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function

from worker.runtime import exit_errors

# An error the operator can fix (a bad setting, a bad job declaration, no schema, Redis unreachable)
# ends the command with one line and exit 2, not a traceback: from the registry's import on.
exit_errors.install(os.environ.get("LOG_FORMAT", "auto"))

from jobs.registry import JOBS, JobSpec  # after the hook: its declarations are checked at import
from worker.config import load_config
from worker.core.logs import arq_log_config
from worker.queue import codec
from worker.queue.connection import redis_settings
from worker.runtime.functions import (
    ARQ_MAX_TRIES,
    arq_function,
    arq_functions,
    job_names,
    secret_fields,
)
from worker.runtime.lifecycle import shutdown, startup
from worker.runtime.schedules import cron_jobs

# The `arq` command imports this module, then builds its Worker outside any loop, which takes the
# current loop (`asyncio.get_event_loop()`): a uvloop loop made current here, without the event
# loop policy API (deprecated in Python 3.14). An importer whose loop is already running keeps it.
try:
    asyncio.get_running_loop()
except RuntimeError:
    asyncio.set_event_loop(uvloop.new_event_loop())

_config = load_config()
exit_errors.install(_config.log_format, _config)
# The `arq` command configures its logger after importing this module: in LOG_FORMAT from its first
# line on (one JSON object per line unless stderr is a terminal).
arq.cli.default_log_config = partial(arq_log_config, _config.log_format)  # type: ignore[attr-defined]
_functions = arq_functions()
_crons = cron_jobs(_config)


class Settings:
    """arq reads these attributes as the Worker's keyword arguments (tests override them)."""

    functions: Sequence[WorkerCoroutine | Function] = _functions
    cron_jobs: Sequence[CronJob] | None = _crons
    redis_settings = redis_settings(_config)
    queue_name = _config.queue_name
    on_startup: StartupShutdown | None = startup
    on_shutdown: StartupShutdown | None = shutdown
    # Stored results never carry a job's secret arguments.
    job_serializer = codec.job_encoder(secret_fields())
    # Never raises: bad payloads and unknown names reach the worker's handlers (dead letters).
    job_deserializer = codec.job_decoder(job_names(_functions, _crons))
    max_jobs = _config.max_jobs  # under WORKER_MAX_JOBS=auto, the ceiling (WORKER_MAX_JOBS_MAX)
    # The policy's own deadline (JOB_TIMEOUT) fires first; arq's is a backstop.
    job_timeout = _config.job_timeout + 5
    max_tries = ARQ_MAX_TRIES
    # SIGTERM: stop taking jobs, let running ones finish this long, then cancel and re-queue them.
    job_completion_wait = int(_config.shutdown_grace)
    keep_result = _config.keep_result
    # arq's own loop only keeps house (health, cron, burst, signals): worker/runtime/consumer.py takes
    # the jobs, waking on enqueue or after POLL_DELAY.
    poll_delay = max(_config.poll_delay, 0.5)
    health_check_interval = _config.health_check_interval
    log_results = False


def settings_with(
    extra_specs: Iterable[JobSpec[Any, Any]] = (),
    *,
    functions: Sequence[WorkerCoroutine | Function] | None = None,
    cron_jobs: Sequence[CronJob] | None = _crons,
    name: str = "Settings",
    **attributes: Any,
) -> type[Settings]:
    """``Settings`` with more jobs: ``extra_specs`` run as arq functions under the worker's policy,
    beside ``functions`` (default: the registry's jobs and the handlers of bad jobs) and
    ``cron_jobs``; ``attributes`` set other Worker arguments. The result encoder (every job's secret
    fields redacted from stored results) and the decoder (exactly these functions' and cron jobs'
    names known) are derived from them here, the one place that does it.

    A subclass with every attribute in its own ``__dict__``: arq reads a settings class's
    ``__dict__`` only, where inherited attributes are not."""
    specs = (*JOBS, *extra_specs)
    listed = [*(Settings.functions if functions is None else functions)]
    listed += [arq_function(spec) for spec in extra_specs]
    namespace: dict[str, Any] = {
        key: value for key, value in vars(Settings).items() if not key.startswith("__")
    }
    namespace.update(
        functions=listed,
        cron_jobs=cron_jobs,
        job_serializer=codec.job_encoder(secret_fields(specs)),
        job_deserializer=codec.job_decoder(job_names(listed, cron_jobs or ())),
        __doc__=f"arq settings: worker.Settings with {len(listed)} functions.",
    )
    namespace.update(attributes)
    return cast("type[Settings]", type(name, (Settings,), namespace))
