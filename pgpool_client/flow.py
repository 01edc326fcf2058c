"""Flow control as a job declares it and as its payload carries it (docs/flow-control.md).

A job may declare concurrency limits (at most ``max`` running at once per key, fleet-wide), rate
limits (at most ``limit`` starts per ``per`` seconds per key, GCRA with a ``burst``), a fairness key
(one tenant's backlog never delays another tenant's job by more than a claim round) and a default
priority (0-9, higher first). The producer renders them from the validated arguments into the
payload's ``"flow"`` object, which the worker's claim script reads:

    "flow": {"concurrency": [{"name": "per-user", "key": "7", "max": 1}],
             "rate": [{"name": "partner-api", "key": "", "limit": 14, "per_ms": 1000, "burst": 1}],
             "fair": "tenant-7", "priority": 5}

Every field is optional; a payload without ``"flow"`` is a plain job (priority 0, no limits).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from pgpool_client.errors import InvalidFlowDeclaration

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_KEY = 200  # characters of a rendered key
MAX_PRIORITY = 9
MAX_LIMIT = 1_000_000
MAX_BURST = 100_000


def _invalid(details: str) -> InvalidFlowDeclaration:
    return InvalidFlowDeclaration(details=details)


def _name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise _invalid(f"limit name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return name


@dataclass(frozen=True)
class Concurrency:
    """At most ``max`` jobs holding this limit run at once in the whole fleet, per value of the
    argument ``key`` (None: one limit for every job that declares it, across job names)."""

    name: str
    max: int
    key: str | None = None

    def __post_init__(self) -> None:
        _name(self.name)
        if not 1 <= self.max <= MAX_LIMIT:
            raise _invalid(f"limit {self.name!r}: max must be 1..{MAX_LIMIT}, got {self.max}")


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` starts per ``per`` seconds, fleet-wide, per value of the argument ``key``;
    ``burst`` starts may go at once after a quiet spell (GCRA)."""

    name: str
    limit: int
    per: float = 1.0
    burst: int = 1
    key: str | None = None

    def __post_init__(self) -> None:
        _name(self.name)
        if not 1 <= self.limit <= MAX_LIMIT or not 0.001 <= self.per <= 86_400:
            raise _invalid(
                f"rate {self.name!r}: limit must be 1..{MAX_LIMIT} starts per 0.001..86400 "
                f"seconds, got {self.limit} per {self.per}"
            )
        if not 1 <= self.burst <= MAX_BURST:
            raise _invalid(f"rate {self.name!r}: burst must be 1..{MAX_BURST}")


@dataclass(frozen=True)
class Flow:
    """A job's flow-control declaration (jobs/registry.py), rendered per job by ``render``."""

    concurrency: tuple[Concurrency, ...] = ()
    rates: tuple[Rate, ...] = ()
    fair: str | None = None  # the argument whose value is the fairness key (a tenant)
    priority: int = 0

    def __post_init__(self) -> None:
        try:
            check_priority(self.priority)
        except ValueError as exc:
            raise _invalid(str(exc)) from None


def check_flow_keys(job: str, flow: Flow, model: type[BaseModel]) -> None:
    """Refuse a declaration whose keys name no argument of ``model`` (a ValueError at start-up)."""
    fields = model.model_fields
    keys = [*(c.key for c in flow.concurrency), *(r.key for r in flow.rates), flow.fair]
    for key in keys:
        if key is None:
            continue
        if key not in fields:
            raise _invalid(
                f"job {job!r}: flow key {key!r} is not one of its arguments ({', '.join(fields)})"
            )
        if not _key_type(fields[key].annotation):
            raise _invalid(
                f"job {job!r}: flow key {key!r} must be an argument of text, integers or booleans "
                "(the same key in every language)"
            )


def _key_type(annotation: Any) -> bool:
    """Text, integers, booleans (or a Literal / Optional of them): keys every language writes alike."""
    if annotation in (str, int, bool, type(None)):
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return all(type(a) in (str, int, bool) for a in args)
    return bool(args) and get_origin(annotation) in (Union, UnionType) and all(map(_key_type, args))


def check_priority(priority: Any) -> int:
    """``priority`` if it is an integer 0..9, else ValueError."""
    if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be an integer from 0 to {MAX_PRIORITY} (higher first)")
    return priority


def _key(field: str | None, params: BaseModel) -> str:
    """The key of one argument, as every producer writes it: text as is, an integer in decimal,
    a boolean as ``true``/``false``, None as "" (check_flow_keys allows only such arguments)."""
    if field is None:
        return ""
    value = getattr(params, field)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return (value if isinstance(value, str) else str(value))[:MAX_KEY]


def render(flow: Flow | None, params: BaseModel, priority: int | None = None) -> dict[str, Any]:
    """The payload's ``"flow"`` object for one job ({} for none): keys rendered from ``params``."""
    if flow is None and not priority:
        return {}
    out: dict[str, Any] = {}
    if flow is not None:
        if flow.concurrency:
            out["concurrency"] = [
                {"name": c.name, "key": _key(c.key, params), "max": c.max} for c in flow.concurrency
            ]
        if flow.rates:
            out["rate"] = [
                {
                    "name": r.name,
                    "key": _key(r.key, params),
                    "limit": r.limit,
                    "per_ms": round(r.per * 1000),
                    "burst": r.burst,
                }
                for r in flow.rates
            ]
        if flow.fair is not None:
            fair = _key(flow.fair, params)
            if fair:
                out["fair"] = fair
    chosen = check_priority(priority if priority is not None else flow.priority if flow else 0)
    if chosen:
        out["priority"] = chosen
    return out


def flow_problem(flow: Any) -> str:
    """What is wrong with a payload's ``"flow"`` value ("" when nothing): the worker refuses such a
    payload as poison rather than run it outside its limits."""
    if not isinstance(flow, Mapping):
        return "field 'flow' must be a JSON object"
    unknown = set(flow) - {"concurrency", "rate", "fair", "priority"}
    if unknown:
        return f"field 'flow' has unknown member(s) {sorted(unknown)}"
    return _limits_problem(flow) or _fair_problem(flow)


def _limits_problem(flow: Mapping[str, Any]) -> str:
    for member in ("concurrency", "rate"):
        if member in flow and not isinstance(flow[member], list):
            return f"flow.{member} must be a list"
    for item in _items(flow, "concurrency"):
        if not _entry_ok(item, {"name", "key", "max"}) or not _count(item.get("max"), MAX_LIMIT):
            return "flow.concurrency entries are {name, key, max} (max 1..1000000)"
    for item in _items(flow, "rate"):
        fields = {"name", "key", "limit", "per_ms", "burst"}
        if not (
            _entry_ok(item, fields)
            and _count(item.get("limit"), MAX_LIMIT)
            and _count(item.get("per_ms"), 86_400_000)
            and _count(item.get("burst", 1), MAX_BURST)
        ):
            return "flow.rate entries are {name, key, limit, per_ms, burst} (positive integers)"
    return ""


def _fair_problem(flow: Mapping[str, Any]) -> str:
    fair = flow.get("fair")
    if fair is not None and (not isinstance(fair, str) or not 0 < len(fair) <= MAX_KEY):
        return f"flow.fair must be text of 1..{MAX_KEY} characters"
    if "priority" in flow:
        try:
            check_priority(flow["priority"])
        except ValueError as exc:
            return f"flow.priority: {exc}"
    return ""


def _items(flow: Mapping[str, Any], member: str) -> list[Any]:
    value = flow.get(member, [])
    return value if isinstance(value, list) else []


def _entry_ok(item: Any, fields: set[str]) -> bool:
    return (
        isinstance(item, Mapping)
        and set(item) <= fields
        and isinstance(item.get("name"), str)
        and bool(NAME.fullmatch(item["name"]))
        and isinstance(item.get("key", ""), str)
        and len(item.get("key", "")) <= MAX_KEY
    )


def _count(value: Any, high: int) -> bool:
    return type(value) is int and 1 <= value <= high
