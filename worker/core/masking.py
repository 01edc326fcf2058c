"""Masking: credentials in connection URLs, and a job's secret arguments, so that they never reach
logs, messages, stored results or what the commands and the dashboard show.

The one rule for a job's arguments (``mask_arguments``): a job's secret fields (its SecretStr and
SecretBytes arguments) and, when it has any, all its positional arguments (which field each is, is
not checked) read ``REDACTED``; a job whose name is not known has every argument value masked. The
logs never carry a job's arguments at all (worker/core/logs.py).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
REDACTED = "**********"  # a masked job argument
# Query parameters that carry a secret (asyncpg and libpq take ?password= and ?sslpassword=).
SECRET_PARAMETER = re.compile(r"pass(word|wd)?$|secret|token", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (user, host, port and path kept), in
    the netloc and in query parameters such as ``?password=`` and ``?sslpassword=``."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when the port is not a number in range
    except ValueError:
        return "<unparseable URL>"
    query = mask_query(parts.query)
    if parts.password is None:
        # The rest byte for byte (urlunsplit would drop the "//" of "postgresql:///db").
        return url.replace(f"?{parts.query}", f"?{query}", 1) if query != parts.query else url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}"
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_query(query: str) -> str:
    """A URL's query string with the values of secret parameters replaced by ``***``; the other
    parameters kept byte for byte."""
    pairs = query.split("&")
    for i, pair in enumerate(pairs):
        name, sep, _value = pair.partition("=")
        if sep and SECRET_PARAMETER.search(name):
            pairs[i] = f"{name}={MASK}"
    return "&".join(pairs)


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
