"""Unit tests of the LIKE pattern built for prefix searches (jobs.users.like_prefix)."""

from __future__ import annotations

import pytest

from jobs.users import like_prefix

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("prefix", "pattern"),
    [
        ("ada", "ada%"),
        ("Ada", "ada%"),
        ("ZOË", "zoë%"),
        ("100%", "100\\%%"),
        ("o_brien", "o\\_brien%"),
        ("a\\b", "a\\\\b%"),
        ("\\%", "\\\\\\%%"),  # the backslash is escaped first, so the % escape is not doubled
        ("%_\\", "\\%\\_\\\\%"),
        ("o'brien", "o'brien%"),
    ],
)
def test_like_prefix(prefix: str, pattern: str) -> None:
    assert like_prefix(prefix) == pattern


def test_like_prefix_ends_with_one_unescaped_wildcard() -> None:
    pattern = like_prefix("50%_off\\")
    assert pattern.endswith("%")
    body = pattern[:-1]
    # Every %, _ and \ in the body is escaped by a preceding backslash.
    i = 0
    while i < len(body):
        if body[i] == "\\":
            assert body[i + 1] in "%_\\"
            i += 2
        else:
            assert body[i] not in "%_"
            i += 1
