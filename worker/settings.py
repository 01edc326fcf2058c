"""``arq worker.Settings``: the worker's arguments, read once from the configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import uvloop
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function

from worker import codec
from worker.config import load_config
from worker.functions import arq_functions, cron_jobs
from worker.lifecycle import shutdown, startup
from worker.redis_settings import redis_settings

# arq's Worker takes the loop from the current policy, so this makes the `arq` CLI run on uvloop.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

_config = load_config()


class Settings:
    """arq reads these attributes as the Worker's keyword arguments (tests override them)."""

    functions: Sequence[WorkerCoroutine | Function] = arq_functions()
    cron_jobs: Sequence[CronJob] | None = cron_jobs(_config)
    redis_settings = redis_settings(_config)
    queue_name = _config.queue_name
    on_startup: StartupShutdown | None = startup
    on_shutdown: StartupShutdown | None = shutdown
    job_serializer = codec.serialize
    job_deserializer = codec.deserialize
    max_jobs = _config.worker_max_jobs
    job_timeout = _config.job_timeout
    max_tries = _config.max_tries
    keep_result = _config.keep_result
    poll_delay = _config.poll_delay
    health_check_interval = _config.health_check_interval
    log_results = False
