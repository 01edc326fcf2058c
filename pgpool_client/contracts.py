"""A job's contract as a producer sees it: its wire name, the model its arguments must fit and the
type of its result; and the one way arguments are validated, by producers and by the worker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, SecretBytes, SecretStr, TypeAdapter, ValidationError

from pgpool_client.errors import InvalidJobArguments
from pgpool_client.flow import Flow

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class JobContract:
    """One job of the worker's registry: name, argument model, result type (generated into
    pgpool_client/jobs.py from jobs/registry.py)."""

    name: str
    args_model: type[BaseModel]
    result_type: Any
    flow: Flow | None = None  # its limits, fairness key and default priority (flow.py)

    @cached_property
    def result_adapter(self) -> TypeAdapter[Any]:
        """Validates a stored result back into the job's result type."""
        return TypeAdapter(self.result_type)

    def parse(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> BaseModel:
        """The job's arguments validated (leniently, as for every Python caller)."""
        return parse_arguments(self.name, self.args_model, args, kwargs)


def parse_arguments(
    job: str,
    model: type[M],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
) -> M:
    """Validate positional and keyword arguments (positional ones fill fields in order) into
    ``model``; raises InvalidJobArguments, whose message never echoes a value.

    ``strict``: as the worker reads the queue's JSON, where every value must already have its
    schema's type (no ``true`` or ``"7"`` for an integer, no ``1`` for a boolean); only
    timestamps are read from ISO-8601 text. Lenient (``"7"`` → 7) for Python callers."""
    if not args:  # the usual case: keyword arguments only
        try:
            return model.model_validate(kwargs or {}, strict=strict)
        except ValidationError as exc:
            raise InvalidJobArguments(job=job, details=describe(exc)) from None
    fields = list(model.model_fields)
    if len(args) > len(fields):
        raise InvalidJobArguments(
            job=job,
            details=f"takes at most {len(fields)} positional arguments ({', '.join(fields)}), "
            f"got {len(args)}",
        )
    data = dict(zip(fields, args, strict=False))
    for key, value in (kwargs or {}).items():
        if key in data:
            raise InvalidJobArguments(job=job, details=f"{key!r} given twice")
        data[key] = value
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise InvalidJobArguments(job=job, details=describe(exc)) from None


def parse_many(
    job: str, model: type[M], arguments: Iterable[Mapping[str, Any] | None]
) -> Iterator[M]:
    """``parse_arguments(job, model, (), kwargs)`` of each argument set in turn (lenient, keyword
    arguments only), with its validator looked up once."""
    validate = model.__pydantic_validator__.validate_python
    for kwargs in arguments:
        try:
            params = validate(kwargs or {}, strict=False)
        except ValidationError as exc:
            raise InvalidJobArguments(job=job, details=describe(exc)) from None
        yield params


def wire_dump(model: type[BaseModel]) -> Callable[[BaseModel], dict[str, Any]]:
    """``wire_arguments`` for the instances of ``model``, its serializer and secrets looked up
    once (the same dictionary: ``model_dump`` is this serializer's ``to_python``)."""
    if secret_fields(model):
        return wire_arguments
    to_python = model.__pydantic_serializer__.to_python

    def wire(params: BaseModel) -> dict[str, Any]:
        if type(params) is not model:  # a subclass's instance: its own serializer
            return wire_arguments(params)
        data: dict[str, Any] = to_python(params, mode="json", exclude_defaults=True)
        return data

    return wire


def wire_arguments(params: BaseModel) -> dict[str, Any]:
    """Validated arguments as the queue's JSON carries them: defaults left out, secrets in clear.

    Pydantic's JSON dump writes a ``SecretStr`` as ``"**********"``, which would enqueue the mask
    instead of the secret; the payload must carry the value (the worker keeps it out of logs and
    stored results)."""
    data: dict[str, Any] = params.model_dump(mode="json", exclude_defaults=True)
    for name in secret_fields(type(params)):
        if name in data:
            value = getattr(params, name)
            if isinstance(value, SecretStr):
                data[name] = value.get_secret_value()
            elif isinstance(value, SecretBytes):
                data[name] = value.get_secret_value().decode("utf-8", "surrogateescape")
    return data


@cache
def secret_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` typed SecretStr or SecretBytes (also inside Optional/unions)."""
    return tuple(
        name
        for name, info in model.model_fields.items()
        if any(t in (SecretStr, SecretBytes) for t in _types_in(info.annotation))
    )


def _types_in(annotation: Any) -> tuple[Any, ...]:
    return (annotation, *(t for arg in get_args(annotation) for t in _types_in(arg)))


def describe(exc: ValidationError) -> str:
    """A one-line summary of pydantic errors that never echoes the offending values."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
