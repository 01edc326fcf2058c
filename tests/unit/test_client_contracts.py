"""The slim client (pgpool_client) against the worker: its generated job methods and contracts are
the registry's (regenerated and compared, so that a job added, removed or changed in jobs/ fails
here until ``make client-jobs`` is run), its keys are arq's, and its configuration reads only
REDIS_URL and QUEUE_NAME, explicit arguments first."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import get_type_hints

import arq.constants
import pytest

import pgpool_client.jobs
from jobs.registry import JOBS, JOBS_BY_NAME
from pgpool_client import CONTRACTS, Client, ClientConfig, InvalidClientConfig, keys
from worker.ops.client_codegen import TARGET, generate

pytestmark = pytest.mark.unit


def test_generated_job_methods_are_the_registrys() -> None:
    assert Path(pgpool_client.jobs.__file__) == TARGET
    assert TARGET.read_text(encoding="utf-8") == generate(), (
        "pgpool_client/jobs.py differs from jobs/registry.py: run `make client-jobs`"
    )


def test_every_registry_job_has_a_typed_method_and_a_contract() -> None:
    assert list(CONTRACTS) == [spec.name for spec in JOBS]
    for spec in JOBS:
        contract = CONTRACTS[spec.name]
        assert contract.args_model is spec.args_model
        assert contract.result_type == get_type_hints(spec.function)["return"]
        method = getattr(Client, spec.name)
        params = list(inspect.signature(method).parameters)
        assert params == ["self", *spec.args_model.model_fields, "options"], spec.name


def test_a_changed_registry_changes_the_generated_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.ops.client_codegen as codegen

    monkeypatch.setattr(codegen, "JOBS", JOBS[:-1])
    assert codegen.generate() != TARGET.read_text(encoding="utf-8")
    assert "async def deactivate_inactive_users" not in codegen.generate()
    assert "deactivate_inactive_users" in JOBS_BY_NAME


def test_keys_are_arqs() -> None:
    assert arq.constants.job_key_prefix == keys.JOB_PREFIX
    assert arq.constants.in_progress_key_prefix == keys.IN_PROGRESS_PREFIX
    assert arq.constants.retry_key_prefix == keys.RETRY_PREFIX
    assert arq.constants.result_key_prefix == keys.RESULT_PREFIX
    assert arq.constants.abort_jobs_ss == keys.ABORT_SET
    assert arq.constants.expires_extra_ms == keys.EXPIRES_EXTRA_MS


def test_explicit_arguments_win_over_the_environment() -> None:
    env = {"REDIS_URL": "redis://env:6379/1", "QUEUE_NAME": "env-queue", "LOG_LEVEL": "info"}
    assert ClientConfig.resolve(environ=env).redis_url == "redis://env:6379/1"
    assert ClientConfig.resolve(environ=env).queue_name == "env-queue"
    explicit = ClientConfig.resolve("redis://arg:6379/2", "arg-queue", environ=env)
    assert (explicit.redis_url, explicit.queue_name) == ("redis://arg:6379/2", "arg-queue")
    default = ClientConfig.resolve(environ={"LOG_LEVEL": "info", "PG_POOL_MAX_SIZE": "x"})
    assert (default.redis_url, default.queue_name) == ("redis://127.0.0.1:6379/0", "arq:queue")
    assert default.connect_timeout <= 5


def test_the_configuration_masks_the_password_and_refuses_bad_values() -> None:
    config = ClientConfig("redis://user:hunter2@redis:6379/0")
    assert "hunter2" not in repr(config) and "***" in repr(config)
    with pytest.raises(InvalidClientConfig) as bad:
        ClientConfig("http://user:hunter2@redis:6379/0")
    assert "hunter2" not in str(bad.value)
    with pytest.raises(InvalidClientConfig):
        ClientConfig(queue_name="")
    with pytest.raises(InvalidClientConfig):
        ClientConfig(connect_timeout=0)
