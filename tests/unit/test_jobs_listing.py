"""``python -m worker jobs``: every job's doc, argument schema and flow-control declaration (the
TypeScript client's generated FLOWS come from the same declarations)."""

from __future__ import annotations

import argparse
import json

import pytest

from jobs.registry import JOBS, JOBS_BY_NAME
from pgpool_client.flow import Concurrency, Flow, Rate
from worker.config import Config
from worker.ops.jobs_cli import cmd_jobs, flow_declaration


async def test_jobs_prints_each_jobs_flow_declaration(capsys: pytest.CaptureFixture[str]) -> None:
    assert await cmd_jobs(Config.model_construct(), argparse.Namespace()) == 0
    listing = json.loads(capsys.readouterr().out)
    assert list(listing) == [spec.name for spec in JOBS]
    assert listing["get_user"]["flow"] is None
    heavy = {
        "concurrency": [{"name": "heavy-db", "max": 20, "key": None}],
        "rates": [],
        "fair": None,
        "priority": 0,
    }
    assert listing["count_users"]["flow"] == heavy == listing["search_users"]["flow"]
    assert listing["deactivate_inactive_users"]["flow"]["concurrency"] == [
        {"name": "deactivate-users", "max": 1, "key": None}
    ]
    for spec in JOBS:
        assert listing[spec.name]["flow"] == flow_declaration(JOBS_BY_NAME[spec.name].flow)
        assert listing[spec.name]["arguments"] == spec.args_model.model_json_schema()


def test_a_declaration_lists_every_member() -> None:
    flow = Flow(
        concurrency=(Concurrency("per-user", 1, key="user_id"),),
        rates=(Rate("partner-api", 14, per=0.5, burst=3, key="tenant"),),
        fair="tenant",
        priority=6,
    )
    assert flow_declaration(flow) == {
        "concurrency": [{"name": "per-user", "max": 1, "key": "user_id"}],
        "rates": [{"name": "partner-api", "limit": 14, "per": 0.5, "burst": 3, "key": "tenant"}],
        "fair": "tenant",
        "priority": 6,
    }
