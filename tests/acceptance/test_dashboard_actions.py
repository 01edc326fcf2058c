"""The dashboard's sign-in, roles and actions in headless Chromium (the fixtures of
test_dashboard.py), served by ``python -m worker dashboard`` with HTTP basic users.

The browser sends the user's credentials through the DevTools protocol (``Authorization`` on every
request, as a browser does once its user has signed in). With DASHBOARD_OPERATOR_SCREENSHOT set
(`make screenshot`), the operator's view is saved there (docs/dashboard-operator.png).
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import pytest
from arq.connections import ArqRedis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.acceptance.conftest import free_port
from tests.acceptance.test_dashboard import (
    DashboardServer,
    browser,
    dashboard_server,
    settled,
    texts,
)
from tests.faults.conftest import Counters, Spawn, wait_until
from tests.integration.dashboard_asgi import PASSWORDS, USERS
from worker.config import Config
from worker.ops.dashboard_auth import NOT_SIGNED_IN
from worker.ops.inspect_cli import result_view
from worker.queue import flow_admin
from worker.queue.keys import ABORT_SET, RESULT_PREFIX

pytestmark = pytest.mark.acceptance

__all__ = ["browser", "dashboard_server"]  # the fixtures this module uses


def sign_in(browser: WebDriver, user: str, password: str | None = None) -> None:
    """Send ``user``'s basic credentials with every request of this browser from now on."""
    secret = PASSWORDS.get(user, "") if password is None else password
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )


@pytest.fixture
async def signed_in(dashboard_server: DashboardServer) -> str:
    """A dashboard with two users: vera (viewer) and otto (operator)."""
    return await dashboard_server(DASHBOARD_AUTH="basic", DASHBOARD_USERS=USERS)


async def open_page(browser: WebDriver, url: str) -> None:
    await asyncio.to_thread(browser.get, url)
    await settled(
        browser,
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1",
        "the first render",
    )


def page_texts(browser: WebDriver, selector: str) -> list[str]:
    """The text of each element ``selector`` matches, read in one go (the page re-renders its
    tables every 2 s: elements found one by one may be gone when read)."""
    found = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)", selector
    )
    return [str(t) for t in found]


def click_in(browser: WebDriver, table: str, label: str) -> bool:
    """Click the first button ``label`` in a row of ``table``, found and clicked in one go."""
    return bool(
        browser.execute_script(
            "const b = [...document.querySelectorAll('#' + arguments[0] + ' button')]"
            ".find((e) => e.textContent === arguments[1]); if (b) b.click(); return !!b;",
            table,
            label,
        )
    )


def body_text(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


async def confirm(browser: WebDriver, question: str) -> None:
    await settled(browser, lambda b: b.find_element(By.ID, "confirm").is_displayed(), "the dialog")
    assert question in browser.find_element(By.ID, "confirm-text").text
    browser.find_element(By.ID, "confirm-yes").click()


async def test_a_viewer_sees_no_action_and_a_forged_post_is_refused(
    config: Config,
    arq_redis: ArqRedis,
    pool: asyncpg.Pool[asyncpg.Record],
    signed_in: str,
    browser: WebDriver,
) -> None:
    sign_in(browser, "vera")
    await open_page(browser, signed_in)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-role") == "viewer"
    assert texts(browser, "#whoami") == ["vera \u00b7 viewer"]
    assert browser.find_elements(By.CSS_SELECTOR, "form, button, input") == []
    # The request the page would send, forged from the page itself: the server refuses it.
    answer = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch("api/actions/pause", {method: "POST", body: JSON.stringify({all: true}),
          headers: {"Content-Type": "application/json", "X-Dashboard-Request": "1"}})
          .then(async (r) => done([r.status, await r.text()]));"""
    )
    assert answer[0] == 403 and "may not act" in answer[1], answer
    assert await flow_admin.paused_names(arq_redis, config.queue_name) == []
    row = await pool.fetchrow(
        "SELECT role, outcome FROM dashboard_audit WHERE actor = 'vera' ORDER BY id DESC LIMIT 1"
    )
    assert row is not None and (row["role"], row["outcome"]) == ("viewer", "refused")
    await settled(
        browser,
        lambda b: any("vera" in t and "refused" in t for t in page_texts(b, "#audit tr.audit")),
        "the refusal in the audit panel (viewers see it)",
    )


async def test_an_operators_pause_and_abort_take_effect_and_are_audited(
    spawn: Spawn,
    config: Config,
    arq_redis: ArqRedis,
    counters: Counters,
    pool: asyncpg.Pool[asyncpg.Record],
    signed_in: str,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    await spawn(WORKER_MAX_JOBS="2")
    key = f"dash-act-{uuid.uuid4().hex[:8]}"
    long = await arq_redis.enqueue_job("fault_write", key=key, hold=60.0)
    assert long is not None
    await wait_until(lambda: counters.runs(key), what="the long job to start")
    sign_in(browser, "otto")
    await open_page(browser, signed_in)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-operator") == "1"

    # Pause a job name: asked first, then in Redis, in the table and on the panel.
    browser.find_element(By.ID, "pause-name").send_keys("count_users")
    browser.find_element(By.XPATH, "//div[@id='flow-controls']/button[text()='Pause']").click()
    await confirm(browser, "Pause job name count_users?")
    await wait_until(
        lambda: flow_admin.paused_names(arq_redis, config.queue_name), what="the pause in Redis"
    )
    assert await flow_admin.paused_names(arq_redis, config.queue_name) == ["count_users"]
    await settled(
        browser,
        lambda b: page_texts(b, "#flow-paused") == ["paused: count_users (0 waiting)"],
        "the pause shown",
    )

    # Abort the running job from its row.
    await settled(
        browser,
        lambda b: any(long.job_id in t for t in page_texts(b, "#in-progress tr.job")),
        "the running job",
    )
    assert click_in(browser, "in-progress", "Abort")
    cancel = browser.find_element(By.ID, "confirm-no")
    assert browser.find_element(By.ID, "confirm").is_displayed()
    cancel.click()  # "cancel" posts nothing
    assert await arq_redis.zscore(ABORT_SET, long.job_id) is None
    assert click_in(browser, "in-progress", "Abort")
    await confirm(browser, f"Abort job {long.job_id}")

    async def aborted() -> bool:
        stored = await arq_redis.get(RESULT_PREFIX + long.job_id)
        return stored is not None and result_view(stored).get("error") == "CancelledError"

    await wait_until(aborted, timeout=30, what="the job aborted by its worker")
    rows = await pool.fetch(
        "SELECT action, target, outcome, client FROM dashboard_audit WHERE actor = 'otto'"
        " ORDER BY id"
    )
    assert [(r["action"], r["target"], r["outcome"]) for r in rows][-2:] == [
        ("pause", "count_users", "ok"),
        ("abort", long.job_id, "ok"),
    ]
    assert rows[-1]["client"] == "127.0.0.1"
    await settled(
        browser,
        lambda b: (
            [t.split("\t")[1:6] for t in page_texts(b, "#audit tr.audit")][:2]
            == [
                ["otto", "operator", "abort", long.job_id, "ok"],
                ["otto", "operator", "pause", "count_users", "ok"],
            ]
        ),
        "both actions in the audit panel",
    )
    assert "abort" in page_texts(browser, "#action-result")[0]
    await settled(browser, lambda b: page_texts(b, "#in-progress tr.job") == [], "the job gone")
    # The operator's part of the page: the rows' buttons, the dead letters' filter, the audit log.
    browser.execute_script("document.getElementById('in-progress').scrollIntoView()")
    target = Path(
        os.environ.get("DASHBOARD_OPERATOR_SCREENSHOT") or tmp_path / "dashboard-operator.png"
    )
    await asyncio.to_thread(browser.save_screenshot, str(target))
    assert (await asyncio.to_thread(target.read_bytes)).startswith(b"\x89PNG")


class _AttackerPage(BaseHTTPRequestHandler):
    """Another site's page: a form that posts to the dashboard as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        page = (
            f'<form id="f" method="POST" action="{self.target}/api/actions/pause" '
            'enctype="text/plain"><input name=\'{"all": true, "x": "\' value=\'"}\'></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def attacker(signed_in: str) -> Iterator[str]:
    """The URL of another site's page (``localhost``, not the dashboard's 127.0.0.1)."""
    handler = type("Attacker", (_AttackerPage,), {"target": signed_in})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_a_cross_site_post_is_refused(
    config: Config,
    arq_redis: ArqRedis,
    pool: asyncpg.Pool[asyncpg.Record],
    attacker: str,
    browser: WebDriver,
) -> None:
    sign_in(browser, "otto")  # an operator's browser, its credentials sent along
    await asyncio.to_thread(browser.get, attacker)
    await settled(browser, lambda b: "refused" in body_text(b), "the dashboard's answer")
    assert "cross-site request refused" in body_text(browser)
    assert await flow_admin.paused_names(arq_redis, config.queue_name) == []
    row = await pool.fetchrow(
        "SELECT action, outcome, detail FROM dashboard_audit WHERE actor = 'otto'"
        " ORDER BY id DESC LIMIT 1"
    )
    assert row is not None and (row["action"], row["outcome"]) == ("pause", "refused")
    assert "cross-site" in row["detail"]


@pytest.mark.parametrize(
    ("user", "password"),
    [("vera", "not-her-password"), ("nobody", PASSWORDS["vera"]), ("otto", "")],
)
async def test_a_wrong_password_is_refused_with_the_generic_message(
    signed_in: str, browser: WebDriver, user: str, password: str
) -> None:
    sign_in(browser, user, password)
    await asyncio.to_thread(browser.get, signed_in)
    await settled(browser, lambda b: NOT_SIGNED_IN in body_text(b), "the refusal")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") is None


async def test_anonymous_access_is_refused_when_sign_in_is_configured(
    signed_in: str, browser: WebDriver
) -> None:
    # No credentials: 401 with the sign-in challenge, which headless Chromium cannot answer (it
    # shows its error page); nothing of the dashboard reaches the browser.
    for path in ("/", "/api/overview", "/api/audit"):
        await asyncio.to_thread(browser.get, signed_in + path)
        logs = await asyncio.to_thread(browser.get_log, "browser")  # type: ignore[attr-defined]
        assert any("status of 401" in entry["message"] for entry in logs), logs
        assert "pgpool-worker" not in browser.page_source and "queue" not in body_text(browser)
