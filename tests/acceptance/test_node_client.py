"""The TypeScript client (clients/node) against a real worker (`arq worker.Settings`, this test's
database and queue): its `node --test` suite and its README's example, run as printed; its generated
sources current with the registry; its lock file naming no registry.

Node.js 20 or later with npm is required: without it these tests fail saying what to install (they
are never skipped). The npm dependencies are installed (`npm ci`) when node_modules is missing or
older than the lock file, and the client is built (`tsc`) once per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg
import pytest
import redis.asyncio as redis_py
from pydantic import BaseModel, ConfigDict

from bench import node_client
from bench.node_client import MIN_NODE, NODE_DIR
from pgpool_client.client import payload_of
from pgpool_client.flow import Concurrency, Flow, Rate, render
from pgpool_client.jobs import CONTRACTS
from tests.acceptance.conftest import ROOT
from tests.faults.conftest import Spawn
from worker.config import Config
from worker.ops.jobs_cli import flow_declaration

pytestmark = pytest.mark.acceptance

GENERATOR = NODE_DIR / "scripts" / "generate_types.py"
GENERATED = ("jobs.ts", "wire.ts")


def node_tools(path: str | None = None) -> tuple[str, str]:
    """The paths of ``node`` and ``npm`` on ``path`` (default: PATH); the test fails, naming what
    to install, when either is missing or node is older than MIN_NODE."""
    try:
        return node_client.node_tools(path)
    except node_client.NodeUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def _run(argv: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return node_client.run_in_client(argv, timeout, **kwargs)


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    """``node``, with the client's npm dependencies installed and the client built (the bench's
    producers measurements prepare it the same way: bench/node_client.py)."""
    try:
        node = node_client.built_client()
    except node_client.NodeUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield node


def _client_env(config: Config) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": config.redis_url, "QUEUE_NAME": config.queue_name}


def test_the_node_tools_missing_fail_saying_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        node_tools(path=str(tmp_path))  # a PATH with neither
    message = str(failed.value)
    assert "node and npm not found" in message
    assert f"Node.js {MIN_NODE} or later" in message
    assert "apt-get install nodejs npm" in message


def test_the_generated_sources_match_the_registry(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name in GENERATED:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        committed = (NODE_DIR / "src" / name).read_text(encoding="utf-8")
        assert fresh == committed, (
            f"clients/node/src/{name} is out of date with the registry: run "
            ".venv/bin/python clients/node/scripts/generate_types.py and commit it"
        )


def _urls(value: Any, where: str = "") -> Iterator[str]:
    """Where, in a JSON document, a string holds a URL: "path: value"."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _urls(item, f"{where}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _urls(item, f"{where}/{i}")
    elif isinstance(value, str) and "://" in value:
        yield f"{where}: {value}"


def test_the_lock_file_names_no_registry_and_the_versions_are_exact() -> None:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    # A package's funding link (its project page) is the one URL npm always records.
    urls = [u for u in _urls(lock) if not re.match(r"/packages/[^:]+/funding(/\d+)?/url: ", u)]
    assert not urls, f"package-lock.json names hosts (see clients/node/.npmrc): {urls}"
    assert all("resolved" not in entry for entry in lock["packages"].values())
    package = json.loads((NODE_DIR / "package.json").read_text(encoding="utf-8"))
    pins = {**package["dependencies"], **package["devDependencies"]}
    loose = {name: v for name, v in pins.items() if not re.fullmatch(r"\d+\.\d+\.\d+", v)}
    assert not loose, f"package.json versions that are not exact: {loose}"


@pytest.mark.timeout(600)
async def test_the_node_client_against_a_real_worker(
    node: str, spawn: Spawn, config: Config, users: list[asyncpg.Record]
) -> None:
    await spawn(settings="worker.Settings")
    done = await asyncio.to_thread(
        _run, [node, "--test", "test/"], timeout=480, env=_client_env(config)
    )
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"node --test failed:\n{report}"
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 23, report
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), report


def _readme_example() -> str:
    text = (NODE_DIR / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^```js\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert found, "clients/node/README.md has no ```js example"
    return found.group(1)


@pytest.mark.timeout(300)
async def test_the_readme_example_runs_as_printed(
    node: str,
    spawn: Spawn,
    config: Config,
    pool: asyncpg.Pool[asyncpg.Record],
    users: list[asyncpg.Record],
) -> None:
    example = _readme_example()
    assert len(example.splitlines()) <= 10, example
    async with pool.acquire() as conn:  # user 42 exists, as in the example
        await conn.execute(
            "INSERT INTO users (email, name, is_active, created_at)"
            " SELECT 'node' || g || '@example.com', 'Ada Lovelace', true, now()"
            " FROM generate_series(1, 20) AS g"
        )
        email = await conn.fetchval("SELECT email FROM users WHERE id = 42")
    await spawn(settings="worker.Settings")
    # --eval resolves "pgpool-worker-client" from the working directory: the package itself.
    done = await asyncio.to_thread(
        _run, [node, "--input-type=module", "--eval", example], 120, env=_client_env(config)
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == email


# Enqueues each case ({name, args, priority}) on QUEUE_NAME (no worker reads it); prints the ids.
ENQUEUE_CASES = """
import { JobClient } from "pgpool-worker-client";
const client = await JobClient.connect();
const ids = [];
for (const { name, args, priority } of JSON.parse(process.env.PGW_CASES)) {
  ids.push((await client.enqueue(name, args, priority === null ? {} : { priority })).id);
}
await client.close();
console.log(JSON.stringify(ids));
"""

FLOW_CASES: list[tuple[str, dict[str, Any], int | None]] = [
    ("count_users", {}, None),
    ("count_users", {"active": True}, None),
    ("count_users", {"active": None}, 5),
    ("search_users", {"prefix": "ab"}, None),
    ("search_users", {"prefix": "ab", "field": "name", "limit": 5}, 9),
    ("search_users", {"prefix": "ab"}, 0),
    ("get_user", {"user_id": 3}, None),
    ("get_user", {"user_id": 3}, 2),
    ("deactivate_inactive_users", {"seen_before": "2025-01-31T12:00:00Z"}, None),
]


async def test_node_payloads_carry_the_python_clients_flow(node: str, config: Config) -> None:
    cases = [{"name": n, "args": a, "priority": p} for n, a, p in FLOW_CASES]
    env = {**_client_env(config), "PGW_CASES": json.dumps(cases)}
    argv = [node, "--input-type=module", "--eval", ENQUEUE_CASES]
    done = await asyncio.to_thread(_run, argv, 120, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    ids: list[str] = json.loads(done.stdout)
    redis = redis_py.Redis.from_url(config.redis_url)
    try:
        for job_id, (name, args, priority) in zip(ids, FLOW_CASES, strict=True):
            payload = json.loads(await redis.get(f"arq:job:{job_id}") or "null")
            contract = CONTRACTS[name]
            expected = payload_of(contract, contract.parse((), args), priority)
            assert payload.get("flow") == expected.get("flow"), (name, args, priority)
            in_priority = await redis.zscore(f"{config.queue_name}:flow:priority", job_id)
            assert (in_priority is not None) == bool(expected.get("flow", {}).get("priority"))
        await redis.delete(config.queue_name, f"{config.queue_name}:flow:priority")
        await redis.delete(f"{config.queue_name}:wake", *(f"arq:job:{i}" for i in ids))
    finally:
        await redis.aclose()


class KeyedArgs(BaseModel):
    """Arguments of every kind a flow key can be rendered from (and two that cannot be keys)."""

    model_config = ConfigDict(extra="forbid")
    tenant: str | None = None
    user_id: int
    active: bool | None = None
    at: datetime | None = None
    ratio: float = 2.0
    field: Literal["email", "name"] = "email"


KEYED = Flow(
    concurrency=(
        Concurrency("per-user", 1, key="user_id"),
        Concurrency("per-active", 3, key="active"),
        Concurrency("all", 7),
    ),
    rates=(Rate("partner", 14, per=0.0025, burst=3, key="field"), Rate("slow", 5, per=1.5)),
    fair="tenant",
    priority=4,
)

KEYED_CASES: list[tuple[dict[str, Any], int | None]] = [
    ({"user_id": 7}, None),
    ({"user_id": 7, "tenant": "acme", "active": False, "ratio": 3, "field": "name"}, 9),
    ({"user_id": 1, "tenant": "t" * 199 + "\U0001f600x", "active": True}, 0),
    ({"user_id": 2, "tenant": "", "at": "2025-01-31T12:00:00Z", "ratio": 0.5}, None),
    ({"user_id": 3, "at": "2025-01-31T12:00:00.5+01:00"}, None),
    ({"user_id": 4, "at": "2025-01-31 12:00:00.1234567-05:30"}, 1),
    ({"user_id": 5, "at": "2025-01-31T12:00-00:00", "tenant": None}, None),
]

# Renders each case ({args, priority}) with the declaration and schema given; prints the flows.
RENDER_CASES = """
import { checkArguments, renderFlow } from "pgpool-worker-client";
const { declaration, schema, cases } = JSON.parse(process.env.PGW_RENDER);
const out = cases.map(({ args, priority }) => {
  const { value, problems } = checkArguments(schema, args);
  if (problems.length > 0) throw new Error(problems.join("; "));
  return renderFlow(declaration, value, priority, schema);
});
console.log(JSON.stringify(out));
"""


def test_node_render_flow_matches_the_python_render(node: str) -> None:
    # No registry job declares keys, rates or fairness: a declaration of each, as `jobs` prints it.
    declaration = flow_declaration(KEYED)
    cases = [{"args": args, "priority": priority} for args, priority in KEYED_CASES]
    schema = KeyedArgs.model_json_schema()
    render_input = {"declaration": declaration, "schema": schema, "cases": cases}
    argv = [node, "--input-type=module", "--eval", RENDER_CASES]
    done = _run(argv, 120, env={**os.environ, "PGW_RENDER": json.dumps(render_input)})
    assert done.returncode == 0, done.stderr[-4000:]
    rendered = json.loads(done.stdout)
    for flow, (args, priority) in zip(rendered, KEYED_CASES, strict=True):
        assert flow == render(KEYED, KeyedArgs.model_validate(args), priority), args
    partner = {"name": "partner", "key": "email", "limit": 14, "per_ms": 2, "burst": 3}
    assert rendered[0]["rate"][0] == partner
    assert rendered[2]["fair"] == "t" * 199 + "\U0001f600" and "priority" not in rendered[2]
    assert rendered[1]["concurrency"][1]["key"] == "false"  # JSON's text, in every language
