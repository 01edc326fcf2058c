"""The client's own configuration: where Redis is, which queue, how long to wait. Explicit
arguments win over the environment (``REDIS_URL``, ``QUEUE_NAME``: the worker's names), which wins
over the defaults; no other variable is read, and none of the worker's settings is validated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pgpool_client.errors import InvalidClientConfig
from pgpool_client.masking import mask_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE_NAME = "arq:queue"
SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class ClientConfig:
    """Redis URL (its password masked in ``repr`` and in errors), queue name, connect timeout
    (at most this long before RedisUnavailable), command timeout (a reply slower than this is a
    lost connection) and how often a read is retried."""

    redis_url: str = DEFAULT_REDIS_URL
    queue_name: str = DEFAULT_QUEUE_NAME
    connect_timeout: float = 5.0
    command_timeout: float = 10.0
    read_retries: int = 2

    def __post_init__(self) -> None:
        scheme = self.redis_url.partition("://")[0]
        if scheme not in SCHEMES:
            raise InvalidClientConfig(
                details=f"redis_url {mask_url(self.redis_url)!r} must start with "
                + ", ".join(f"{s}://" for s in SCHEMES)
            )
        if not 1 <= len(self.queue_name) <= 200:
            raise InvalidClientConfig(details="queue_name must be 1 to 200 characters")
        for name in ("connect_timeout", "command_timeout"):
            if not getattr(self, name) > 0:
                raise InvalidClientConfig(details=f"{name} must be more than 0 seconds")
        if self.read_retries < 0:
            raise InvalidClientConfig(details="read_retries must be 0 or more")

    def __repr__(self) -> str:
        return (
            f"ClientConfig(redis_url={mask_url(self.redis_url)!r}, queue_name="
            f"{self.queue_name!r}, connect_timeout={self.connect_timeout:g}, "
            f"command_timeout={self.command_timeout:g}, read_retries={self.read_retries})"
        )

    @classmethod
    def resolve(
        cls,
        redis_url: str | None = None,
        queue_name: str | None = None,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        read_retries: int = 2,
        environ: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        """The configuration from these arguments, else ``REDIS_URL`` / ``QUEUE_NAME`` from
        ``environ`` (default: the process environment), else the defaults."""
        env = os.environ if environ is None else environ
        return cls(
            redis_url=redis_url or env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            queue_name=queue_name or env.get("QUEUE_NAME") or DEFAULT_QUEUE_NAME,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            read_retries=read_retries,
        )
