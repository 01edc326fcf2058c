"""Unit tests of credential masking in connection URLs (worker.core.masking.mask_url)."""

from __future__ import annotations

import pytest

from worker.core.masking import mask_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql://app:hunter2@db.example.com:5432/jobs?sslmode=require",
            "postgresql://app:***@db.example.com:5432/jobs?sslmode=require",
        ),
        ("postgres://app:hunter2@db/jobs", "postgres://app:***@db/jobs"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            "rediss://default:hunter2@cache.example:6380/2",
            "rediss://default:***@cache.example:6380/2",
        ),
        ("postgresql://app:hunter2@[::1]:5432/jobs", "postgresql://app:***@[::1]:5432/jobs"),
        ("redis://:hunter2@[2001:db8::7]/1", "redis://:***@[2001:db8::7]/1"),
        ("postgresql://app:p%40ss%3Aw0rd@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app:@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app:hunter2@db/x#frag", "postgresql://app:***@db/x#frag"),
    ],
)
def test_password_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/jobs_worker",
        "redis://127.0.0.1:6379/0",
        "rediss://cache.example:6380",
        "postgresql://[::1]:5432/db",
        "postgresql:///db?host=/var/run/postgresql",
        "",
        "not a url at all",
    ],
)
def test_url_without_password_is_unchanged(url: str) -> None:
    assert mask_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:hunter2@[::1/db",  # unclosed IPv6 bracket
        "postgresql://app:hunter2@db:notaport/x",  # port is not a number
        "redis://:hunter2@cache:99999/0",  # port out of range
    ],
)
def test_unparseable_input_does_not_raise_or_leak(url: str) -> None:
    masked = mask_url(url)
    assert masked == "<unparseable URL>"
    assert "hunter2" not in masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres?password=s3cret",
            "postgresql://postgres@127.0.0.1:5432/postgres?password=***",
        ),
        (
            "postgresql://app@db/x?sslmode=verify-full&sslpassword=s3cret&application_name=w",
            "postgresql://app@db/x?sslmode=verify-full&sslpassword=***&application_name=w",
        ),
        (
            "postgresql://app:hunter2@db/x?PASSWORD=s3cret#frag",
            "postgresql://app:***@db/x?PASSWORD=***#frag",
        ),
        (
            "postgresql:///x?host=/run/pg&password=s%40cret",
            "postgresql:///x?host=/run/pg&password=***",
        ),
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=***"),
        (
            "postgresql://db/x?passfile=/home/app/.pgpass",
            "postgresql://db/x?passfile=/home/app/.pgpass",
        ),
    ],
)
def test_password_in_the_query_string_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url) and "s%40cret" not in mask_url(url)
