"""Typed arguments and results of the jobs: the contract other services enqueue against.

The models live here, in the slim client, so that a producer has them without the worker; the
worker's jobs/models.py re-exports them (one copy)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

UserId = Annotated[int, Field(gt=0, le=2**63 - 1)]
NUL = "\x00"
# Exactly these types (not subclasses) hold no text: _holds_nul is False for any of them.
_NO_TEXT = frozenset({int, bool, float, type(None), datetime, date})
_LAX_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _datetime_from_text(value: Any) -> Any:
    """ISO-8601 text as a datetime, in strict validation too (JSON has no datetime type)."""
    if isinstance(value, str | bytes):
        try:
            return _LAX_DATETIME.validate_python(value)
        except ValidationError:
            return value  # the field's own check names the problem, without echoing the text
    return value


# A timezone-aware timestamp: a datetime, or ISO-8601 text with a zone ("2025-01-31T12:00:00Z").
Timestamp = Annotated[AwareDatetime, BeforeValidator(_datetime_from_text)]


class JobArgs(BaseModel):
    """Base of every job's arguments: unknown fields are refused, and no text may hold a NUL
    character (PostgreSQL text cannot). ``JobSpec.parse`` validates leniently for Python callers
    ("42" → 42, what the typed client and the CLI send) and strictly for the queue's JSON
    (``strict=True``: an integer must be a JSON integer, a boolean true or false), where only
    timestamps are read from ISO-8601 text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # Every field of every job passes here: text and the types that hold none are decided
        # without _holds_nul's walk (the same answer, for less).
        kind = type(value)
        if kind is str:
            if NUL not in value:
                return value
        elif kind in _NO_TEXT or not _holds_nul(value):
            return value
        raise ValueError("text must not contain the NUL character (\\u0000)")


def _holds_nul(value: Any) -> bool:
    """Whether a validated value (text, secret, or a container of them) holds a NUL character."""
    if isinstance(value, SecretStr | SecretBytes):
        value = value.get_secret_value()
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, bytes):
        return b"\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_nul(item) for item in value)
    return False


class GetUserArgs(JobArgs):
    user_id: UserId


class ListUsersArgs(JobArgs):
    active: bool | None = None
    created_from: Timestamp | None = None
    created_to: Timestamp | None = None
    after_id: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ListUsersArgs:
        if self.created_from and self.created_to and self.created_from >= self.created_to:
            raise ValueError("created_from must be before created_to")
        return self


class SearchUsersArgs(JobArgs):
    prefix: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    field: Literal["email", "name"] = "email"
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class CountUsersArgs(JobArgs):
    active: bool | None = None


IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class DeactivateInactiveArgs(JobArgs):
    seen_before: Timestamp
    idempotency_key: IdempotencyKey | None = Field(
        default=None,
        description="business key: the effect is applied once per key (default: job id)",
    )


class User(BaseModel):
    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime
    last_seen_at: datetime | None


class UserPage(BaseModel):
    users: list[User]
    next_after_id: int | None = Field(
        description="pass as after_id for the next page; null at the end"
    )


class UserList(BaseModel):
    users: list[User]


class UserCount(BaseModel):
    count: int


class DeactivatedUsers(BaseModel):
    deactivated: int
    seen_before: datetime
