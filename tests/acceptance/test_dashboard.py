"""The web dashboard in a real headless browser (Debian's chromium via chromium-driver and
selenium), served by ``python -m worker dashboard`` beside a real worker subprocess.

`make test` installs chromium and chromium-driver with apt-get when they are missing. The
screenshot goes to the test's temporary directory, or to DASHBOARD_SCREENSHOT when it is set
(`make screenshot` writes docs/dashboard.png that way).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO

import asyncpg
import pytest
from arq.connections import ArqRedis
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.acceptance.conftest import ROOT, free_port, http_json, worker_cli, worker_env
from tests.faults.conftest import Counters, Spawn, wait_until
from worker.config import Config

pytestmark = pytest.mark.acceptance

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1440,1500",
)


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/lib/chromium")
    assert found, (
        f"{name} is not installed: run `make browser` (apt-get install chromium chromium-driver)"
    )
    return found


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


DashboardServer = Callable[..., Awaitable[str]]


@pytest.fixture
async def dashboard_server(config: Config, tmp_path: Path) -> AsyncIterator[DashboardServer]:
    """Start ``python -m worker dashboard`` on a free port with more environment (``DASHBOARD_*``);
    its URL once ``/healthz`` answers. Every one started is stopped by its PID afterwards."""
    started: list[tuple[subprocess.Popen[bytes], IO[str]]] = []

    async def start(**env: str) -> str:
        port = free_port()
        log_path = tmp_path / f"dashboard-{port}.log"
        log = log_path.open("w")
        proc = subprocess.Popen(  # noqa: ASYNC220  (fork+exec, returns at once)
            [sys.executable, "-m", "worker", "dashboard", "--port", str(port)],
            cwd=ROOT,
            env=worker_env(config, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((proc, log))
        url = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return (await http_json(f"{url}/healthz", timeout=1.0))[0] == 200
            except OSError:
                return False

        await wait_until(up, timeout=20, what="the dashboard")
        return url

    try:
        yield start
    finally:
        for proc, log in started:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            log.close()


@pytest.fixture
async def dashboard(dashboard_server: DashboardServer) -> str:
    """The dashboard without sign-in (``DASHBOARD_AUTH=none``, on 127.0.0.1): a viewer."""
    return await dashboard_server(DASHBOARD_AUTH="none")


def texts(browser: WebDriver, selector: str) -> list[str]:
    """The rendered text of every element ``selector`` matches, read in one script: the page
    re-renders every 2 s, so element handles read one by one can go stale between two reads."""
    found = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText.trim());",
        selector,
    )
    return [str(t) for t in found]


def cells(browser: WebDriver, selector: str) -> list[list[str]]:
    """The cells' texts of every row ``selector`` matches, read in one script (as ``texts``)."""
    found = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((r) => [...r.querySelectorAll('td')].map((c) => c.innerText.trim()));",
        selector,
    )
    return [[str(c) for c in row] for row in found]


async def settled(browser: WebDriver, check: object, what: str) -> None:
    """Poll the page (it refreshes itself every 2 s) until ``check(browser)`` holds; an element
    that a re-render replaced between two reads counts as not yet."""

    def attempt() -> bool:
        try:
            return bool(check(browser))  # type: ignore[operator]
        except StaleElementReferenceException:
            return False

    async def probe() -> bool:
        return await asyncio.to_thread(attempt)

    await wait_until(probe, timeout=30, what=what)


async def test_dashboard_shows_queue_workers_jobs_failures_and_dead_letters(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    users: list[asyncpg.Record],
    dashboard: str,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    await spawn(WORKER_MAX_JOBS="4")
    key = f"dash-{uuid.uuid4().hex[:8]}"
    for i in range(1, 21):
        await arq_redis.enqueue_job("get_user", user_id=i)
    failed = await arq_redis.enqueue_job("fault_write", key=f"{key}-bad", fail_permanently=True)
    long = await arq_redis.enqueue_job("fault_write", key=f"{key}-long", hold=60.0)
    await arq_redis.enqueue_job("count_users", _defer_by=3600)
    assert failed is not None and long is not None
    await wait_until(lambda: counters.runs(f"{key}-long"), what="the long job to start")

    await asyncio.to_thread(browser.get, dashboard)
    await settled(
        browser,
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1",
        "the first render",
    )
    assert browser.title.endswith(config.queue_name)

    def workers_listed(b: WebDriver) -> bool:
        rows = texts(b, "#workers tr.worker")
        return len(rows) == 1 and "healthy" in rows[0]

    await settled(browser, workers_listed, "the worker's row")
    await settled(
        browser,
        lambda b: any(long.job_id in t for t in texts(b, "#in-progress tr.job")),
        "the running job",
    )
    await settled(
        browser, lambda b: texts(b, "#dead-letter-count") == ["1"], "the dead-letter count"
    )
    letters = texts(browser, "#dead-letters tr.letter")
    assert len(letters) == 1 and failed.job_id in letters[0] and "permanent-error" in letters[0]
    failures = texts(browser, "#failures tr.failure")
    assert any(failed.job_id in f and "ValueError" in f for f in failures)
    assert texts(browser, "#queue-scheduled") == ["1"]
    assert texts(browser, "#queue-in-progress") == ["1"]
    assert texts(browser, "#workers-alive") == ["1 / 1"]
    assert texts(browser, "#pool-max") == ["4"]
    # Throughput: the 20 jobs show up as a line once two history samples exist.
    await settled(
        browser,
        lambda b: (
            len(b.find_elements(By.CSS_SELECTOR, "#throughput rect[data-key=jobs_per_s]")) >= 1
        ),
        "the throughput chart",
    )
    assert "jobs/s" in texts(browser, "#throughput-now")[0]
    # A viewer (DASHBOARD_AUTH=none on loopback): no form, no button, nothing to post.
    assert browser.find_elements(By.CSS_SELECTOR, "form, button, input") == []

    target = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    await asyncio.to_thread(browser.save_screenshot, str(target))
    assert (await asyncio.to_thread(target.read_bytes)).startswith(b"\x89PNG")


async def test_dashboard_shows_the_outbox_as_status_does(
    spawn: Spawn,
    config: Config,
    pool: asyncpg.Pool[asyncpg.Record],
    dashboard: str,
    browser: WebDriver,
) -> None:
    # A row committed with no worker running: not yet relayed, and ageing.
    job_id = f"dash-outbox-{uuid.uuid4().hex[:8]}"
    await pool.execute(
        "SELECT enqueue_job('get_user', '{\"user_id\": 1}', $1, NULL, $2)",
        job_id,
        config.queue_name,
    )
    await asyncio.to_thread(browser.get, dashboard)
    await settled(browser, lambda b: texts(b, "#outbox-unrelayed") == ["1"], "one unrelayed row")
    assert texts(browser, "#outbox-oldest")[0].endswith(("ms", " s"))
    assert texts(browser, "#outbox-lag-p50") == ["\u2013"]  # nothing relayed yet
    status = json.loads((await worker_cli(config, "status", "--json")).stdout)
    assert status["outbox"]["unrelayed"] == 1 and status["outbox"]["recently_relayed"] == 0
    _, overview = await http_json(f"{dashboard}/api/overview")
    assert overview["outbox"].keys() == status["outbox"].keys()  # the same summary

    # A worker relays it: nothing unrelayed, and its relay lag shown.
    await spawn()
    await settled(browser, lambda b: texts(b, "#outbox-unrelayed") == ["0"], "the row relayed")
    await settled(
        browser, lambda b: "of the 1 rows relayed" in texts(b, "#outbox-note")[0], "the lag note"
    )
    shown = texts(browser, "#outbox-lag-p50") + texts(browser, "#outbox-lag-max")
    assert len(shown) == 2 and all(t.endswith(("ms", " s")) for t in shown), shown
    status = json.loads((await worker_cli(config, "status", "--json")).stdout)
    assert status["outbox"]["unrelayed"] == 0 and status["outbox"]["recently_relayed"] == 1
    assert status["outbox"]["relay_lag_max_s"] >= status["outbox"]["relay_lag_p50_s"] > 0
    assert "relay lag" in (await worker_cli(config, "status")).stdout
