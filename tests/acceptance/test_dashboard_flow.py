"""The dashboard's flow-control panel in headless Chromium (fixtures of test_dashboard.py): paused
names and each limit with its jobs in use and blocked, as ``python -m worker limits`` shows them."""

from __future__ import annotations

import asyncio
import time

import pytest
from arq.connections import ArqRedis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.acceptance.conftest import http_json, worker_cli
from tests.acceptance.test_dashboard import (
    browser,
    cells,
    dashboard,
    dashboard_server,
    settled,
    texts,
)
from worker.client import JobClient
from worker.config import Config
from worker.runtime.claims import Claimer

pytestmark = pytest.mark.acceptance

__all__ = ["browser", "dashboard", "dashboard_server"]  # the fixtures this module uses


async def test_dashboard_shows_paused_names_and_limits_with_their_use(
    config: Config, arq_redis: ArqRedis, dashboard: str, browser: WebDriver
) -> None:
    assert (await worker_cli(config, "pause", "get_user")).returncode == 0
    assert (await worker_cli(config, "limits", "set", "heavy-db", "--max", "1")).returncode == 0
    for user_id in (1, 2):
        await arq_redis.enqueue_job("get_user", user_id=user_id)
    async with JobClient.connect(config) as client:
        for _ in range(3):
            await client.enqueue("count_users", active=True)
    # A claim round as a worker's (no worker runs: nothing finishes, the numbers hold still).
    claimed, _, _ = await Claimer(arq_redis, config.queue_name, "60000").claim(
        int(time.time() * 1000), 10
    )
    assert len(claimed) == 1

    await asyncio.to_thread(browser.get, dashboard)
    await settled(browser, lambda b: texts(b, "#queue-blocked") == ["4"], "four blocked jobs")
    assert texts(browser, "#flow-paused") == ["paused: get_user (2 waiting)"]
    rows = {row[0]: row for row in cells(browser, "#flow-limits tr.limit")}
    assert rows["heavy-db"] == [
        "heavy-db",
        "concurrency",
        "max 1 (set at run time)",
        "search_users, count_users",
        "1",
        "2",
        "1",
    ]
    assert rows["deactivate-users"][2:] == ["max 1", "deactivate_inactive_users", "0", "0", "0"]
    _, overview = await http_json(f"{dashboard}/api/overview")
    status = await worker_cli(config, "limits", "--json")
    assert '"in_use": 1' in status.stdout and overview["flow"]["limits"][1]["in_use"] == 1
    # Still read-only: nothing on the page acts.
    assert browser.find_elements(By.CSS_SELECTOR, "form, button, input") == []
