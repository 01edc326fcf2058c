"""Masking: credentials in connection URLs, and a job's secret arguments, so that they never reach
logs, messages, stored results or what the commands and the dashboard show.

The one rule for a job's arguments (``mask_arguments``): a job's secret fields (its SecretStr and
SecretBytes arguments) and, when it has any, all its positional arguments (which field each is, is
not checked) read ``REDACTED``; a job whose name is not known has every argument value masked. The
logs never carry a job's arguments at all (worker/core/logs.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

# URL masking is the slim client's (it masks the Redis URL in its own errors): one copy.
from pgpool_client.masking import MASK, SECRET_PARAMETER, mask_query, mask_url

__all__ = ["MASK", "REDACTED", "SECRET_PARAMETER", "mask_arguments", "mask_query", "mask_url"]

REDACTED = "**********"  # a masked job argument


def mask_arguments(
    secret_fields: Collection[str] | None, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """A job's positional and keyword arguments with ``REDACTED`` for the masked ones:
    ``secret_fields`` are the job's secret fields (positional arguments are all masked when there
    are any), or None for a job whose name is not known (every value masked)."""
    if secret_fields is None:
        return [REDACTED] * len(args), dict.fromkeys(kwargs, REDACTED)
    if not secret_fields:
        return list(args), dict(kwargs)
    masked = {k: REDACTED if k in secret_fields else v for k, v in kwargs.items()}
    return [REDACTED] * len(args), masked
