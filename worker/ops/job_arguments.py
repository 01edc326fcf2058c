"""A job's arguments as the commands show them (``inspect``, ``dead-letters show``): the one masking
rule of worker/core/masking.py, with the secret fields of the jobs in ``jobs/registry.py``.

A job name the registry does not know (a producer's typo, a job of a newer deploy, a poison
payload) has every argument value masked, as in its stored result; the raw payload stays in
PostgreSQL, for replays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.registry import JOBS_BY_NAME, JobSpec
from worker.core.masking import mask_arguments

Registry = Mapping[str, JobSpec[Any, Any]]


def secret_fields_of(function: str, jobs: Registry = JOBS_BY_NAME) -> tuple[str, ...] | None:
    """The secret fields of job ``function``; None for a name ``jobs`` does not know."""
    spec = jobs.get(function)
    return None if spec is None else spec.secret_fields


def shown_arguments(
    function: str, args: Any, kwargs: Any, jobs: Registry = JOBS_BY_NAME
) -> dict[str, Any]:
    """``{"args": [...], "kwargs": {...}}`` of job ``function``, masked (values of another JSON
    type than a list or an object, which no job has, are shown as none)."""
    positional = args if isinstance(args, list) else []
    keywords = kwargs if isinstance(kwargs, dict) else {}
    masked_args, masked_kwargs = mask_arguments(
        secret_fields_of(function, jobs), positional, keywords
    )
    return {"args": masked_args, "kwargs": masked_kwargs}


def redact_letter(letter: dict[str, Any], jobs: Registry = JOBS_BY_NAME) -> dict[str, Any]:
    """A dead letter for display: its payload's arguments masked as ``shown_arguments`` masks
    them (a payload that is not a JSON object is shown as it is: base64 of bytes)."""
    payload = letter.get("payload")
    if isinstance(payload, dict) and ("a" in payload or "k" in payload):
        shown = shown_arguments(
            str(letter.get("function")), payload.get("a"), payload.get("k"), jobs
        )
        masked = {**payload, "a": shown["args"], "k": shown["kwargs"]}
        letter = {**letter, "payload": masked}
    return letter
