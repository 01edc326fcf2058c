"""Unit tests of the job catalogue: argument parsing, messages and result validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs import users
from jobs.errors import InvalidJobArguments, WorkerError
from jobs.models import (
    CountUsersArgs,
    DeactivateInactiveArgs,
    GetUserArgs,
    ListUsersArgs,
    SearchUsersArgs,
    User,
    UserCount,
    UserPage,
)
from jobs.registry import JOBS, JOBS_BY_NAME, JobSpec

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-token"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def spec(name: str) -> JobSpec[Any, Any]:
    return JOBS_BY_NAME[name]


def test_catalogue_covers_every_job() -> None:
    assert set(JOBS_BY_NAME) == {
        "get_user",
        "list_users",
        "search_users",
        "count_users",
        "deactivate_inactive_users",
    }
    assert len(JOBS) == len(JOBS_BY_NAME)


@pytest.mark.parametrize(
    ("name", "function", "model", "writes"),
    [
        ("get_user", users.get_user, GetUserArgs, False),
        ("list_users", users.list_users, ListUsersArgs, False),
        ("search_users", users.search_users, SearchUsersArgs, False),
        ("count_users", users.count_users, CountUsersArgs, False),
        (
            "deactivate_inactive_users",
            users.deactivate_inactive_users,
            DeactivateInactiveArgs,
            True,
        ),
    ],
)
def test_catalogue_entries(name: str, function: Any, model: type[Any], writes: bool) -> None:
    entry = spec(name)
    assert entry.function is function
    assert entry.args_model is model
    assert entry.writes is writes


def test_parse_keyword_arguments() -> None:
    args = spec("search_users").parse(kwargs={"prefix": "ada", "field": "name", "limit": 5})
    assert args == SearchUsersArgs(prefix="ada", field="name", limit=5)


def test_parse_defaults() -> None:
    assert spec("list_users").parse() == ListUsersArgs()
    assert spec("count_users").parse(kwargs=None) == CountUsersArgs(active=None)


def test_parse_positional_arguments_fill_fields_in_order() -> None:
    args = spec("list_users").parse([True, T0, T0 + timedelta(days=1), 10, 50])
    assert args == ListUsersArgs(
        active=True, created_from=T0, created_to=T0 + timedelta(days=1), after_id=10, limit=50
    )


def test_parse_mixes_positional_and_keyword_arguments() -> None:
    args = spec("search_users").parse(["zo"], {"limit": 3})
    assert args == SearchUsersArgs(prefix="zo", field="email", limit=3)


def test_parse_accepts_iso_strings_as_json_payloads_carry_them() -> None:
    args = spec("deactivate_inactive_users").parse(kwargs={"seen_before": "2024-01-01T00:00:00Z"})
    assert args.seen_before == T0


def test_too_many_positional_arguments() -> None:
    with pytest.raises(InvalidJobArguments) as info:
        spec("get_user").parse([1, 2])
    assert str(info.value) == (
        "Invalid arguments for job 'get_user': takes at most 1 positional arguments (user_id), "
        "got 2. Fix the arguments and enqueue the job again."
    )


def test_too_many_positional_arguments_lists_fields_in_order() -> None:
    with pytest.raises(InvalidJobArguments, match=r"\(prefix, field, limit\), got 4"):
        spec("search_users").parse(["a", "email", 1, 2])


def test_argument_given_twice() -> None:
    with pytest.raises(InvalidJobArguments) as info:
        spec("get_user").parse([1], {"user_id": 2})
    assert str(info.value) == (
        "Invalid arguments for job 'get_user': 'user_id' given twice. "
        "Fix the arguments and enqueue the job again."
    )


def test_unknown_field_is_refused() -> None:
    with pytest.raises(InvalidJobArguments) as info:
        spec("get_user").parse(kwargs={"user_id": 1, "include_password": True})
    assert "job 'get_user'" in str(info.value)
    assert "include_password: Extra inputs are not permitted" in str(info.value)


def test_missing_field_is_refused() -> None:
    with pytest.raises(InvalidJobArguments, match="user_id: Field required"):
        spec("get_user").parse()


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("get_user", {"user_id": "abc"}, "user_id: Input should be a valid integer"),
        ("get_user", {"user_id": 0}, "user_id: Input should be greater than 0"),
        ("get_user", {"user_id": 2**63}, "user_id: Input should be less than or equal to"),
        ("get_user", {"user_id": 1.5}, "user_id: Input should be a valid integer"),
        ("count_users", {"active": "maybe"}, "active: Input should be a valid boolean"),
        ("list_users", {"limit": 1001}, "limit: Input should be less than or equal to 1000"),
        ("list_users", {"after_id": -1}, "after_id: Input should be greater than or equal to 0"),
        ("search_users", {"prefix": "a", "field": "password"}, "field: Input should be 'email'"),
        ("deactivate_inactive_users", {"seen_before": "soon"}, "seen_before: Input should be"),
    ],
)
def test_type_errors_name_the_job_and_field(
    name: str, kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidJobArguments) as info:
        spec(name).parse(kwargs=kwargs)
    message = str(info.value)
    assert message.startswith(f"Invalid arguments for job {name!r}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("get_user", (), {"user_id": SECRET}),
        ("get_user", (SECRET,), {}),
        ("count_users", (), {"active": SECRET}),
        ("search_users", (), {"prefix": SECRET, "field": SECRET}),
        ("search_users", (), {"prefix": SECRET * 20}),
        ("deactivate_inactive_users", (), {"seen_before": SECRET}),
        ("list_users", (), {"created_from": SECRET}),
    ],
)
def test_message_never_contains_the_offending_value(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidJobArguments) as info:
        spec(name).parse(args, kwargs)
    assert f"job {name!r}" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_invalid_arguments_is_not_retryable_and_a_worker_error() -> None:
    with pytest.raises(InvalidJobArguments) as info:
        spec("get_user").parse(kwargs={"user_id": "x"})
    assert isinstance(info.value, WorkerError)
    assert info.value.retryable is False
    assert info.value.context["job"] == "get_user"


def test_result_adapter_validates_a_user() -> None:
    stored = {
        "id": 7,
        "email": "zoe@example.com",
        "name": "Zoë Ünicode",
        "is_active": True,
        "created_at": "2024-01-01T00:00:00Z",
        "last_seen_at": None,
    }
    user = spec("get_user").result_adapter.validate_python(stored)
    assert isinstance(user, User)
    assert user.name == "Zoë Ünicode"
    assert user.created_at == T0
    assert user.last_seen_at is None


def test_result_adapter_accepts_none_for_a_missing_user() -> None:
    assert spec("get_user").result_adapter.validate_python(None) is None


def test_result_adapters_of_other_jobs() -> None:
    assert spec("count_users").result_adapter.validate_python({"count": 3}) == UserCount(count=3)
    page = spec("list_users").result_adapter.validate_python({"users": [], "next_after_id": None})
    assert page == UserPage(users=[], next_after_id=None)


def test_result_adapter_refuses_a_malformed_result() -> None:
    with pytest.raises(ValueError, match="count"):
        spec("count_users").result_adapter.validate_python({"total": 3})


def test_list_users_refuses_reversed_or_empty_creation_range() -> None:
    with pytest.raises(ValueError, match="created_from must be before created_to"):
        ListUsersArgs(created_from=T0, created_to=T0)
    with pytest.raises(ValueError, match="created_from must be before created_to"):
        ListUsersArgs(created_from=T0 + timedelta(seconds=1), created_to=T0)


def test_list_users_range_error_through_parse() -> None:
    with pytest.raises(InvalidJobArguments, match="arguments: Value error, created_from must be"):
        spec("list_users").parse(kwargs={"created_from": T0, "created_to": T0})


def test_list_users_accepts_ordered_and_open_ranges() -> None:
    assert ListUsersArgs(created_from=T0, created_to=T0 + timedelta(microseconds=1)).created_from
    assert ListUsersArgs(created_from=T0).created_to is None
    assert ListUsersArgs(created_to=T0).created_from is None


@pytest.mark.parametrize("field", ["created_from", "created_to"])
def test_list_users_refuses_naive_datetimes(field: str) -> None:
    with pytest.raises(InvalidJobArguments, match=f"{field}: Input should have timezone info"):
        spec("list_users").parse(kwargs={field: datetime(2024, 1, 1)})


def test_deactivate_refuses_naive_datetime() -> None:
    with pytest.raises(InvalidJobArguments, match="seen_before: Input should have timezone info"):
        spec("deactivate_inactive_users").parse(kwargs={"seen_before": "2024-01-01T00:00:00"})


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_search_users_limit_bounds(limit: int) -> None:
    with pytest.raises(InvalidJobArguments, match="limit: Input should be"):
        spec("search_users").parse(kwargs={"prefix": "a", "limit": limit})


@pytest.mark.parametrize("limit", [1, 100])
def test_search_users_limit_edges_are_accepted(limit: int) -> None:
    assert spec("search_users").parse(kwargs={"prefix": "a", "limit": limit}).limit == limit


def test_search_users_refuses_empty_and_too_long_prefix() -> None:
    with pytest.raises(
        InvalidJobArguments, match="prefix: String should have at least 1 character"
    ):
        spec("search_users").parse(kwargs={"prefix": ""})
    with pytest.raises(InvalidJobArguments, match="prefix: String should have at most 100"):
        spec("search_users").parse(kwargs={"prefix": "a" * 101})


def test_args_are_frozen() -> None:
    args = GetUserArgs(user_id=1)
    with pytest.raises(ValueError, match="frozen"):
        args.user_id = 2
