"""The consumer's supervision of its loops (worker/runtime/consumer.py): a loop that fails on
something other than Redis is logged with its traceback and started again, never left dead."""

from __future__ import annotations

from typing import cast

import pytest

from worker.runtime.consumer import Consumer


async def test_a_loop_failing_on_a_defect_is_logged_and_resumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def loop() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a defect in the loop")

    # Only the logger is used on this path: no worker is needed.
    await Consumer._supervise(cast(Consumer, object()), loop, "claim")
    assert calls == 2
    [record] = [r for r in caplog.records if "claim loop failed" in r.getMessage()]
    assert record.exc_info is not None and "a defect in the loop" in str(record.exc_info[1])
