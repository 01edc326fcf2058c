"""Flow-control declarations (pgpool_client/flow.py): what a job may declare, how the producer
renders it into the payload, and which payload "flow" values the worker refuses as poison."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from jobs import users
from jobs.models import GetUserArgs, ListUsersArgs
from jobs.registry import JOBS_BY_NAME, JobSpec
from pgpool_client.flow import Concurrency, Flow, Rate, flow_problem, render
from worker.queue import codec

pytestmark = pytest.mark.unit


class TenantArgs(BaseModel):
    tenant: str
    user_id: int
    note: str | None = None


FLOW = Flow(
    concurrency=(Concurrency("per-user", max=1, key="user_id"), Concurrency("all", max=10)),
    rates=(Rate("partner", limit=14, per=1.0, burst=2, key="tenant"),),
    fair="tenant",
    priority=3,
)


def test_render_takes_keys_from_the_validated_arguments() -> None:
    rendered = render(FLOW, TenantArgs(tenant="acme", user_id=7))
    assert rendered == {
        "concurrency": [
            {"name": "per-user", "key": "7", "max": 1},
            {"name": "all", "key": "", "max": 10},
        ],
        "rate": [{"name": "partner", "key": "acme", "limit": 14, "per_ms": 1000, "burst": 2}],
        "fair": "acme",
        "priority": 3,
    }
    assert flow_problem(rendered) == ""


def test_keys_are_written_alike_in_every_language() -> None:
    class Keyed(BaseModel):
        tenant: str | None = None
        user_id: int
        active: bool

    flow = Flow(
        (Concurrency("a", 1, key="active"), Concurrency("b", 1, key="tenant")), fair="user_id"
    )
    rendered = render(flow, Keyed(user_id=7, active=False))
    assert [c["key"] for c in rendered["concurrency"]] == ["false", ""]
    assert rendered["fair"] == "7"


def test_an_explicit_priority_wins_and_nothing_is_rendered_for_a_plain_job() -> None:
    assert render(FLOW, TenantArgs(tenant="a", user_id=1), priority=9)["priority"] == 9
    assert "priority" not in render(FLOW, TenantArgs(tenant="a", user_id=1), priority=0)
    assert render(None, TenantArgs(tenant="a", user_id=1)) == {}
    assert render(None, TenantArgs(tenant="a", user_id=1), priority=4) == {"priority": 4}
    with pytest.raises(ValueError, match="priority must be an integer from 0 to 9"):
        render(None, TenantArgs(tenant="a", user_id=1), priority=10)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Concurrency("heavy", max=0), "max must be 1..1000000, got 0"),
        (lambda: Rate("partner", limit=5, per=0), "starts per 0.001..86400 seconds, got 5 per 0"),
        (lambda: Rate("partner", limit=5, burst=0), "burst must be 1..100000"),
        (lambda: Concurrency("no spaces", max=1), "must be 1-64 letters"),
        (lambda: Flow(priority=12), "priority must be an integer from 0 to 9"),
        (
            lambda: JobSpec(
                "x", users.get_user, GetUserArgs, flow=Flow((Concurrency("c", 1, key="nope"),))
            ),
            "job 'x': flow key 'nope' is not one of its arguments (user_id)",
        ),
        (
            lambda: JobSpec("x", users.list_users, ListUsersArgs, flow=Flow(fair="created_from")),
            "job 'x': flow key 'created_from' must be an argument of text, integers or booleans",
        ),
    ],
)
def test_bad_declarations_are_refused_with_what_to_fix(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


@pytest.mark.parametrize(
    ("flow", "problem"),
    [
        ([], "field 'flow' must be a JSON object"),
        ({"limits": []}, "unknown member(s) ['limits']"),
        ({"concurrency": {}}, "flow.concurrency must be a list"),
        ({"concurrency": [{"name": "a", "key": "", "max": 0}]}, "flow.concurrency entries"),
        ({"concurrency": [{"name": "a", "key": "", "max": True}]}, "flow.concurrency entries"),
        ({"concurrency": [{"name": "a b", "key": "", "max": 1}]}, "flow.concurrency entries"),
        ({"rate": [{"name": "r", "key": "", "limit": 5}]}, "flow.rate entries"),
        ({"rate": [{"name": "r", "key": "", "limit": 5, "per_ms": 0}]}, "flow.rate entries"),
        ({"fair": ""}, "flow.fair must be text"),
        ({"fair": 7}, "flow.fair must be text"),
        ({"priority": "9"}, "flow.priority"),
        ({"priority": True}, "flow.priority"),
    ],
)
def test_a_malformed_flow_makes_the_payload_poison(flow: Any, problem: str) -> None:
    assert problem in flow_problem(flow)
    decode = codec.job_decoder({"get_user"})
    payload = codec.serialize({"f": "get_user", "a": [], "k": {}, "et": 1, "t": None, "flow": flow})
    job = decode(payload)
    assert job["f"] == codec.POISON_JOB and problem in job["k"]["problem"]


def test_a_well_formed_flow_is_a_job_like_any_other() -> None:
    decode = codec.job_decoder({"get_user"})
    flow = {"concurrency": [{"name": "a", "key": "7", "max": 1}], "priority": 2}
    payload = codec.serialize({"f": "get_user", "a": [], "k": {}, "et": 1, "t": None, "flow": flow})
    assert decode(payload)["f"] == "get_user"


def test_the_registrys_declarations_reach_the_generated_client() -> None:
    from pgpool_client.jobs import CONTRACTS

    for name, spec in JOBS_BY_NAME.items():
        assert CONTRACTS[name].flow == spec.flow
    assert JOBS_BY_NAME["deactivate_inactive_users"].flow == Flow(
        (Concurrency("deactivate-users", max=1),)
    )
