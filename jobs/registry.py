"""The catalogue of jobs: name, function, argument model. Worker and clients both read it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, get_type_hints

from pydantic import BaseModel, TypeAdapter

from jobs import users
from jobs.context import JobContext
from jobs.models import (
    CountUsersArgs,
    DeactivateInactiveArgs,
    GetUserArgs,
    JobArgs,
    ListUsersArgs,
    SearchUsersArgs,
)
from pgpool_client.contracts import describe, parse_arguments, secret_fields
from pgpool_client.flow import Concurrency, Flow, check_flow_keys

__all__ = ["JOBS", "JOBS_BY_NAME", "JobSpec", "describe"]

A = TypeVar("A", bound=JobArgs)
R = TypeVar("R", bound=BaseModel | None)


@dataclass(frozen=True)
class JobSpec(Generic[A, R]):
    """A job as the queue knows it: its wire name, its function and the model its arguments must fit."""

    name: str
    function: Callable[[JobContext, A], Awaitable[R]]
    args_model: type[A]
    writes: bool = False
    max_tries: int | None = None  # None: MAX_TRIES
    timeout: float | None = None  # None: JOB_TIMEOUT
    flow: Flow | None = None  # limits, rates, fairness, priority (docs/flow-control.md)

    def __post_init__(self) -> None:
        if self.flow is not None:
            check_flow_keys(self.name, self.flow, self.args_model)

    def parse(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        strict: bool = False,
    ) -> A:
        """Validate positional and keyword arguments (positional ones fill fields in order);
        ``strict`` as the worker reads the queue's JSON (pgpool_client.contracts.parse_arguments,
        the one rule producers and the worker share)."""
        return parse_arguments(self.name, self.args_model, args, kwargs, strict=strict)

    @cached_property
    def secret_fields(self) -> tuple[str, ...]:
        """Argument fields typed SecretStr or SecretBytes: kept out of logs and stored results."""
        return secret_fields(self.args_model)

    @cached_property
    def result_adapter(self) -> TypeAdapter[Any]:
        """Validates a stored result back into the job's declared return type."""
        return TypeAdapter(get_type_hints(self.function)["return"])

    async def run(self, ctx: JobContext, args: A) -> Any:
        """Run the job and return its result as JSON-friendly data (timestamps as ISO-8601)."""
        result = await self.function(ctx, args)
        return None if result is None else result.model_dump(mode="json")


# Scans of the whole table: at most 20 at once in the fleet, whichever of them it is.
HEAVY_DB = Concurrency("heavy-db", max=20)

JOBS: tuple[JobSpec[Any, Any], ...] = (
    JobSpec("get_user", users.get_user, GetUserArgs),
    JobSpec("list_users", users.list_users, ListUsersArgs),
    JobSpec("search_users", users.search_users, SearchUsersArgs, flow=Flow((HEAVY_DB,))),
    JobSpec("count_users", users.count_users, CountUsersArgs, flow=Flow((HEAVY_DB,))),
    JobSpec(
        "deactivate_inactive_users",
        users.deactivate_inactive_users,
        DeactivateInactiveArgs,
        writes=True,
        # One at a time in the whole fleet: two would update the same rows.
        flow=Flow((Concurrency("deactivate-users", max=1),)),
    ),
)
JOBS_BY_NAME: dict[str, JobSpec[Any, Any]] = {spec.name: spec for spec in JOBS}
