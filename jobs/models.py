"""Typed arguments and results of the jobs: the contract other services enqueue against."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

UserId = Annotated[int, Field(gt=0, le=2**63 - 1)]


class JobArgs(BaseModel):
    """Base of every job's arguments: unknown fields are refused; values are validated and
    converted where lossless ("42" → 42, ISO-8601 text → datetime), so that JSON and CLI input work."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GetUserArgs(JobArgs):
    user_id: UserId


class ListUsersArgs(JobArgs):
    active: bool | None = None
    created_from: AwareDatetime | None = None
    created_to: AwareDatetime | None = None
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
    seen_before: AwareDatetime
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
