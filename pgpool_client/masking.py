"""Credentials out of connection URLs: the password (and secret query parameters) become ``***``,
so that no URL in a message, a log line or a result carries one."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
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
