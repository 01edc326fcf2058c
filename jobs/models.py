"""Typed arguments and results of the jobs: the contract other services enqueue against.

The models are the slim client's (pgpool_client/models.py), so that a producer has them without the
worker's packages; this module re-exports them for the jobs and the worker (one copy)."""

from __future__ import annotations

from pgpool_client.models import (
    NUL,
    CountUsersArgs,
    DeactivatedUsers,
    DeactivateInactiveArgs,
    GetUserArgs,
    IdempotencyKey,
    JobArgs,
    ListUsersArgs,
    SearchUsersArgs,
    Timestamp,
    User,
    UserCount,
    UserId,
    UserList,
    UserPage,
)

__all__ = [
    "NUL",
    "CountUsersArgs",
    "DeactivateInactiveArgs",
    "DeactivatedUsers",
    "GetUserArgs",
    "IdempotencyKey",
    "JobArgs",
    "ListUsersArgs",
    "SearchUsersArgs",
    "Timestamp",
    "User",
    "UserCount",
    "UserId",
    "UserList",
    "UserPage",
]
