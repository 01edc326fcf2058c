"""Unit tests of the progress display for long work (worker.ops.progress)."""

from __future__ import annotations

import io
import re

import pytest

from worker.ops.progress import Progress

pytestmark = pytest.mark.unit


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_on_a_non_terminal_stream() -> None:
    stream = io.StringIO()
    progress = Progress(2_000, "seeding users", stream=stream)
    assert progress.live is False
    progress.advance(500)  # first update is always drawn
    progress.advance(1_500)  # the last one too
    elapsed = progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("seeding users [")
    assert " 25.0% 500/2,000 " in lines[0]
    assert "#" * 7 + " " * 23 + "]" in lines[0]
    assert "100.0% 2,000/2,000 " in lines[1]
    assert "[" + "#" * 30 + "]" in lines[1]
    assert re.search(r"[\d,]+/s, 0s left$", lines[1])
    assert stream.getvalue().endswith("\n")
    assert elapsed >= 0


def test_non_terminal_updates_are_throttled() -> None:
    stream = io.StringIO()
    progress = Progress(1_000, "copy", stream=stream)
    for _ in range(10):
        progress.advance(10)  # within 2 s of the first line: not redrawn
    assert len(stream.getvalue().splitlines()) == 1
    progress.advance(900)  # done: drawn regardless of the time
    assert stream.getvalue().splitlines()[-1].startswith("copy [")
    assert "1,000/1,000" in stream.getvalue().splitlines()[-1]


def test_terminal_redraws_one_line_and_close_ends_it() -> None:
    stream = _Terminal()
    progress = Progress(4, "bench", stream=stream)
    assert progress.live is True
    progress.advance(1)
    progress.advance(1)
    assert stream.getvalue().count("\r") == 2
    assert "\n" not in stream.getvalue()
    assert " 50.0% 2/4 " in stream.getvalue().rsplit("\r", 1)[-1]
    assert progress.close() >= 0
    assert stream.getvalue().endswith("\n")


def test_zero_total_does_not_divide_by_zero() -> None:
    stream = io.StringIO()
    progress = Progress(0, "nothing", stream=stream)
    progress.advance(0)
    assert "nothing [" in stream.getvalue()
    assert " 0.0% 0/1 " in stream.getvalue()
    assert progress.close() >= 0


def test_overshoot_is_capped_at_100_percent() -> None:
    stream = io.StringIO()
    progress = Progress(10, "over", stream=stream)
    progress.advance(15)
    assert "100.0% 15/10 " in stream.getvalue()
    assert "#" * 31 not in stream.getvalue()


def test_close_without_work_writes_nothing_on_a_non_terminal() -> None:
    stream = io.StringIO()
    assert Progress(10, "idle", stream=stream).close() >= 0
    assert stream.getvalue() == ""
