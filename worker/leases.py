"""Job leases: a running job's ``arq:in-progress`` key lives ``JOB_LEASE`` seconds and a heartbeat
renews it, so a crashed worker's job runs again within the lease instead of ``job_timeout + 10 s``."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

LEASE_SET_KEY = "lease_set"  # in a job's ctx: the claim already gave the job its lease


class LeaseKeeper:
    """Holds the leases of this worker's running jobs and renews them all in one round trip."""

    def __init__(self, redis: Redis, lease: float) -> None:
        self.redis = redis
        self.lease_ms = int(lease * 1000)
        self.interval = lease / 3
        # A count per job: a stalled worker may run two tries of one job at once.
        self.held: Counter[str] = Counter()
        self.on_error: Callable[[], None] | None = None  # the worker's Redis error counter

    async def hold(self, job_id: str, lease_set: bool = False) -> None:
        """Start holding a job's lease: shorten arq's in-progress TTL to the lease, unless the
        claim already set it (``lease_set``)."""
        self.held[job_id] += 1
        if not lease_set:
            await self.redis.pexpire(in_progress_key_prefix + job_id, self.lease_ms)

    def release(self, job_id: str) -> None:
        """Stop renewing; arq deletes the in-progress key when it records the outcome."""
        self.held[job_id] -= 1
        if self.held[job_id] <= 0:
            del self.held[job_id]

    async def renew(self) -> None:
        """Extend every held lease (PEXPIRE never re-creates a key arq already deleted)."""
        if not self.held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in self.held:
                pipe.pexpire(in_progress_key_prefix + job_id, self.lease_ms)
            await pipe.execute()

    async def run(self) -> None:
        """Renew leases every third of the lease until cancelled; Redis errors are logged, not fatal."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                if self.on_error is not None:
                    self.on_error()
                logger.warning("could not renew %d job leases: %s", len(self.held), exc)
