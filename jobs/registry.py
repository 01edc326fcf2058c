"""The catalogue of jobs: name, function, argument model. Worker and clients both read it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, get_args, get_type_hints

from pydantic import BaseModel, SecretBytes, SecretStr, TypeAdapter, ValidationError

from jobs import users
from jobs.context import JobContext
from jobs.errors import InvalidJobArguments
from jobs.models import (
    CountUsersArgs,
    DeactivateInactiveArgs,
    GetUserArgs,
    JobArgs,
    ListUsersArgs,
    SearchUsersArgs,
)

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

    def parse(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        strict: bool = False,
    ) -> A:
        """Validate positional and keyword arguments (positional ones fill fields in order).

        ``strict``: as the worker reads the queue's JSON, where every value must already have its
        schema's type (no ``true`` or ``"7"`` for an integer, no ``1`` for a boolean); only
        timestamps are read from ISO-8601 text. Lenient (``"7"`` → 7) for Python callers."""
        if not args:  # the usual case: keyword arguments only
            try:
                return self.args_model.model_validate(kwargs or {}, strict=strict)
            except ValidationError as exc:
                raise InvalidJobArguments(job=self.name, details=describe(exc)) from None
        fields = list(self.args_model.model_fields)
        if len(args) > len(fields):
            raise InvalidJobArguments(
                job=self.name,
                details=f"takes at most {len(fields)} positional arguments ({', '.join(fields)}), "
                f"got {len(args)}",
            )
        data = dict(zip(fields, args, strict=False))
        for key, value in (kwargs or {}).items():
            if key in data:
                raise InvalidJobArguments(job=self.name, details=f"{key!r} given twice")
            data[key] = value
        try:
            return self.args_model.model_validate(data, strict=strict)
        except ValidationError as exc:
            raise InvalidJobArguments(job=self.name, details=describe(exc)) from None

    @cached_property
    def secret_fields(self) -> tuple[str, ...]:
        """Argument fields typed SecretStr or SecretBytes: kept out of logs and stored results."""
        return tuple(
            name
            for name, info in self.args_model.model_fields.items()
            if any(t in (SecretStr, SecretBytes) for t in _types_in(info.annotation))
        )

    @cached_property
    def result_adapter(self) -> TypeAdapter[Any]:
        """Validates a stored result back into the job's declared return type."""
        return TypeAdapter(get_type_hints(self.function)["return"])

    async def run(self, ctx: JobContext, args: A) -> Any:
        """Run the job and return its result as JSON-friendly data (timestamps as ISO-8601)."""
        result = await self.function(ctx, args)
        return None if result is None else result.model_dump(mode="json")


def _types_in(annotation: Any) -> tuple[Any, ...]:
    return (annotation, *(t for arg in get_args(annotation) for t in _types_in(arg)))


def describe(exc: ValidationError) -> str:
    """A one-line summary of pydantic errors that never echoes the offending values."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


JOBS: tuple[JobSpec[Any, Any], ...] = (
    JobSpec("get_user", users.get_user, GetUserArgs),
    JobSpec("list_users", users.list_users, ListUsersArgs),
    JobSpec("search_users", users.search_users, SearchUsersArgs),
    JobSpec("count_users", users.count_users, CountUsersArgs),
    JobSpec(
        "deactivate_inactive_users",
        users.deactivate_inactive_users,
        DeactivateInactiveArgs,
        writes=True,
    ),
)
JOBS_BY_NAME: dict[str, JobSpec[Any, Any]] = {spec.name: spec for spec in JOBS}
