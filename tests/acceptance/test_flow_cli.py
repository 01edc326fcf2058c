"""``python -m worker pause / resume / limits`` as subprocesses, beside a real worker whose claims
obey them, and what ``status`` and ``/metrics`` then show (docs/flow-control.md, Operating it)."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis

from tests.acceptance.conftest import ROOT, free_port, worker_cli
from tests.acceptance.test_metrics import scrape, value
from tests.faults.conftest import Spawn, wait_until
from worker.client import JobClient
from worker.config import Config

pytestmark = pytest.mark.acceptance


async def cli_json(config: Config, *args: str) -> Any:
    done = await worker_cli(config, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


async def test_pause_resume_and_limits_say_what_they_did_and_refuse_bad_input(
    config: Config,
) -> None:
    done = await worker_cli(config, "pause", "count_users", "search_users")
    assert (done.returncode, done.stdout) == (
        0,
        "paused now: count_users (0 waiting), search_users (0 waiting)\n",
    )
    again = await cli_json(config, "pause", "count_users")  # idempotent
    assert again["paused"] == ["count_users", "search_users"]
    assert (await worker_cli(config, "pause", "--all")).stdout.startswith(
        "paused now: the whole queue (*), count_users"
    )
    assert (await cli_json(config, "resume", "--all"))["paused"] == ["count_users", "search_users"]
    assert (await worker_cli(config, "resume", "count_users", "search_users")).stdout == (
        "nothing is paused\n"
    )
    # Unknown names: one line, the known names, exit 2; --force for other producers' jobs.
    refused = await worker_cli(config, "pause", "billing_sync")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: unknown job name 'billing_sync'; known: count_users")
    assert len(refused.stderr.splitlines()) == 1
    assert (await cli_json(config, "pause", "billing_sync", "--force"))["paused"] == [
        "billing_sync"
    ]
    assert (await cli_json(config, "resume", "billing_sync", "--force"))["paused"] == []

    listed = await worker_cli(config, "limits")
    assert listed.returncode == 0
    assert "heavy-db: concurrency max 20; jobs search_users, count_users: 0 in use, 0 blocked" in (
        listed.stdout
    )
    assert "deactivate-users: concurrency max 1" in listed.stdout
    done = await worker_cli(config, "limits", "set", "heavy-db", "--max", "0")
    assert done.returncode == 0 and "max 0 (none may start) (set at run time; declared max 20)" in (
        done.stdout
    )
    shown = await cli_json(config, "limits")
    heavy = next(u for u in shown["limits"] if u["name"] == "heavy-db")
    assert heavy["override"] == {"max": 0} and heavy["declared"] == {"max": 20}
    for argv, message in (
        (("heavy-db", "--max", "-3"), "error: --max must be 0..1000000"),
        (("heavy-db", "--rate", "5", "--per", "1"), "is a concurrency limit"),
        (("partner", "--rate", "5", "--per", "1"), "error: unknown limit 'partner'"),
        (("partner", "--rate", "5", "--per", "0", "--force"), "error: --per must be"),
    ):
        bad = await worker_cli(config, "limits", "set", *argv)
        assert bad.returncode == 2 and message in bad.stderr, (argv, bad.stderr)
        assert "Traceback" not in bad.stderr
    rate = await cli_json(
        config, "limits", "set", "partner", "--rate", "5", "--per", "2", "--force"
    )
    assert rate["limits"][0]["override"] == {"limit": 5, "per_ms": 2000}
    cleared = await worker_cli(config, "limits", "clear", "heavy-db")
    assert cleared.stdout.startswith("heavy-db: concurrency max 20; jobs")
    assert "partner: rate 5 per 2s (set at run time)" in (await worker_cli(config, "limits")).stdout


async def test_a_worker_obeys_pause_resume_and_limits_and_status_and_metrics_show_them(
    spawn: Spawn, config: Config, arq_redis: ArqRedis, users: list[asyncpg.Record]
) -> None:
    port = free_port()
    await spawn(METRICS_PORT=str(port))
    assert (await worker_cli(config, "pause", "count_users")).returncode == 0
    # A plain arq client's jobs: a pause is by name, whoever enqueued them.
    paused = [await arq_redis.enqueue_job("count_users", active=True) for _ in range(5)]
    other = await arq_redis.enqueue_job("get_user", user_id=1)
    assert other is not None and all(paused)
    assert (await other.result(timeout=20))["id"] == 1  # other names still run

    async def all_blocked() -> dict[str, Any] | None:
        status = await cli_json(config, "status")
        return status if status["jobs"]["blocked"] == 5 else None

    status = await wait_until(all_blocked, what="the paused jobs to be moved aside")
    assert status is not None
    assert status["jobs"]["scheduled"] == 0 and status["jobs"]["waiting"] == 0
    assert status["flow"]["paused_waiting"] == {"count_users": 5}
    text = (await worker_cli(config, "status")).stdout
    assert "0 scheduled, 5 blocked" in text and "paused now: count_users (5 waiting)" in text
    assert "limit heavy-db: concurrency max 20" in text
    scraped = await scrape(port)
    assert value(scraped, "worker_flow_paused", job="count_users") == 1
    assert value(scraped, "worker_queue_jobs", state="blocked") == 5
    assert value(scraped, "worker_queue_jobs", state="scheduled") == 0
    assert ("worker_flow_in_use", frozenset({("limit", "heavy-db")})) in scraped
    for job in paused:  # not run; a plain arq client reads the score as deferred
        assert job is not None and await job.status() == "deferred"

    assert (await worker_cli(config, "resume", "count_users")).stdout == "nothing is paused\n"
    for job in paused:
        assert job is not None and "count" in await job.result(timeout=20)
    scraped = await scrape(port)
    assert ("worker_flow_paused", frozenset({("job", "count_users")})) not in scraped

    # The brake: a limit of 0 holds the next job back; clearing it lets it run.
    assert (await worker_cli(config, "limits", "set", "heavy-db", "--max", "0")).returncode == 0

    async def blocked_on_heavy_db() -> bool:
        return value(await scrape(port), "worker_flow_blocked", limit="heavy-db") == 1

    async with JobClient.connect(config) as client:  # renders the job's declared limits
        held = await client.enqueue("count_users", active=True)
        await wait_until(blocked_on_heavy_db, what="the job to wait on heavy-db")
        listed = (await worker_cli(config, "limits")).stdout
        assert "heavy-db: concurrency max 0 (none may start)" in listed
        assert (await worker_cli(config, "limits", "clear", "heavy-db")).returncode == 0
        assert "count" in (await held.raw_result(timeout=20))["result"]
    assert value(await scrape(port), "worker_flow_blocked", limit="heavy-db") == 0


async def test_the_operating_transcript_of_the_flow_control_doc_prints_what_it_shows(
    config: Config,
) -> None:
    text = (ROOT / "docs" / "flow-control.md").read_text(encoding="utf-8")
    section = text.split("## Operating it", 1)[1].split("\n## ", 1)[0]
    (transcript,) = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    steps = re.findall(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", transcript, re.MULTILINE)
    assert len(steps) == 6
    for command, printed in steps:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "worker"], command
        done = await worker_cli(config, *argv[3:])
        assert (done.returncode, done.stdout) == (0, printed), (command, done.stderr)
