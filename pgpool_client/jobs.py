"""The jobs' contracts and typed methods, generated from jobs/registry.py: do not edit by hand.

Regenerate with ``make client-jobs`` (``python -m worker.ops.client_codegen``);
tests/unit/test_client_contracts.py fails when this file and the registry differ.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, Literal, Unpack

from pgpool_client.contracts import JobContract
from pgpool_client.flow import Concurrency, Flow
from pgpool_client.handle import EnqueueOptions, JobHandle
from pgpool_client.models import (
    CountUsersArgs,
    DeactivatedUsers,
    DeactivateInactiveArgs,
    GetUserArgs,
    ListUsersArgs,
    SearchUsersArgs,
    User,
    UserCount,
    UserList,
    UserPage,
)

CONTRACTS: dict[str, JobContract] = {
    "get_user": JobContract(
        "get_user",
        GetUserArgs,
        User | None,
    ),
    "list_users": JobContract(
        "list_users",
        ListUsersArgs,
        UserPage,
    ),
    "search_users": JobContract(
        "search_users",
        SearchUsersArgs,
        UserList,
        flow=Flow(
            concurrency=(Concurrency("heavy-db", max=20),),
        ),
    ),
    "count_users": JobContract(
        "count_users",
        CountUsersArgs,
        UserCount,
        flow=Flow(
            concurrency=(Concurrency("heavy-db", max=20),),
        ),
    ),
    "deactivate_inactive_users": JobContract(
        "deactivate_inactive_users",
        DeactivateInactiveArgs,
        DeactivatedUsers,
        flow=Flow(
            concurrency=(Concurrency("deactivate-users", max=1),),
        ),
    ),
}


class JobMethods(ABC):
    """One typed method per job of the registry, each over ``enqueue`` (the Client's)."""

    @abstractmethod
    async def enqueue(
        self,
        name: str,
        /,
        *args: Any,
        options: EnqueueOptions | None = None,
        **kwargs: Any,
    ) -> JobHandle[Any]:
        """Enqueue job ``name`` (pgpool_client.client.Client.enqueue)."""

    async def get_user(
        self,
        user_id: int,
        **options: Unpack[EnqueueOptions],
    ) -> JobHandle[User | None]:
        """Enqueue ``get_user`` (GetUserArgs).

        One user by id, or None if there is no such user.
        """
        return await self.enqueue(
            "get_user",
            options=options,
            user_id=user_id,
        )

    async def list_users(
        self,
        *,
        active: bool | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
        **options: Unpack[EnqueueOptions],
    ) -> JobHandle[UserPage]:
        """Enqueue ``list_users`` (ListUsersArgs).

        A page of users in id order (keyset pagination), filtered by activity and creation time.
        """
        return await self.enqueue(
            "list_users",
            options=options,
            active=active,
            created_from=created_from,
            created_to=created_to,
            after_id=after_id,
            limit=limit,
        )

    async def search_users(
        self,
        prefix: str,
        *,
        field: Literal["email", "name"] = "email",
        limit: int = 20,
        **options: Unpack[EnqueueOptions],
    ) -> JobHandle[UserList]:
        """Enqueue ``search_users`` (SearchUsersArgs).

        Users whose email or name starts with a prefix (case-insensitive), at most ``limit``.
        """
        return await self.enqueue(
            "search_users",
            options=options,
            prefix=prefix,
            field=field,
            limit=limit,
        )

    async def count_users(
        self,
        *,
        active: bool | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> JobHandle[UserCount]:
        """Enqueue ``count_users`` (CountUsersArgs).

        How many users there are, optionally only active or inactive ones.
        """
        return await self.enqueue(
            "count_users",
            options=options,
            active=active,
        )

    async def deactivate_inactive_users(
        self,
        seen_before: datetime,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> JobHandle[DeactivatedUsers]:
        """Enqueue ``deactivate_inactive_users`` (DeactivateInactiveArgs).

        Deactivate, in one transaction, active users not seen since ``seen_before``.
        """
        return await self.enqueue(
            "deactivate_inactive_users",
            options=options,
            seen_before=seen_before,
            idempotency_key=idempotency_key,
        )
