"""``METRICS_AUTH=bearer`` on a real worker subprocess: /metrics answers only its METRICS_TOKEN, with
one 401 for every wrong request; /healthz and /readyz stay open to the probes; the token is never
logged; a worker configured with a missing, blank or malformed token refuses to start in one line.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.test_edges_startup_errors import run, the_error
from tests.acceptance.test_metrics_endpoint_edges import exchange, listening_worker
from tests.faults.conftest import Counters, Spawn, WorkerProcess
from worker.config import Config, load_config
from worker.errors import ConfigError
from worker.runtime.operations import CHALLENGE

pytestmark = pytest.mark.acceptance

TOKEN = "Xq3vN0t-a-real_token~4tests+ok/Z="


def request(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def header_of(answer: bytes, name: str) -> str | None:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


async def bearer_worker(spawn: Spawn) -> tuple[WorkerProcess, int]:
    async def spawn_with_token(**env: str) -> WorkerProcess:
        return await spawn(METRICS_AUTH="bearer", METRICS_TOKEN=TOKEN, **env)

    return await listening_worker(spawn_with_token)


async def test_metrics_answer_only_the_bearer_token(spawn: Spawn, counters: Counters) -> None:
    worker, port = await bearer_worker(spawn)
    answer = await exchange(port, request("/metrics", f"Authorization: Bearer {TOKEN}"))
    assert status_of(answer) == 200, answer[:300]
    families = {
        f.name for f in text_string_to_metric_families(answer.split(b"\r\n\r\n")[1].decode())
    }
    assert "worker_jobs_started" in families
    # The scheme is case-insensitive (RFC 9110); extra spaces around the token are ignored.
    lower = await exchange(port, request("/metrics", f"Authorization: bearer   {TOKEN} "))
    assert status_of(lower) == 200
    head = await exchange(
        port, request("/metrics", f"Authorization: Bearer {TOKEN}", method="HEAD")
    )
    assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")
    assert TOKEN not in worker.log()


async def test_every_wrong_request_gets_the_same_401(spawn: Spawn, counters: Counters) -> None:
    worker, port = await bearer_worker(spawn)
    wrong = [
        (),  # no credentials
        ("Authorization: Bearer",),
        (f"Authorization: Bearer {TOKEN[:-1]}",),  # one character short
        (f"Authorization: Bearer {TOKEN}x",),
        (f"Authorization: Bearer {TOKEN.lower()}",),
        (f"Authorization: Basic {TOKEN}",),  # the right secret, the wrong scheme
        (f"Authorization: {TOKEN}",),
        (f"Authorization: Bearer {TOKEN}", f"Authorization: Bearer {TOKEN}"),  # sent twice
        (f"X-Authorization: Bearer {TOKEN}",),
    ]
    answers = [await exchange(port, request("/metrics", *headers)) for headers in wrong]
    answers.append(await exchange(port, request("/metrics", method="HEAD")))
    for answer in answers:
        assert status_of(answer) == 401, answer[:300]
        assert (
            header_of(answer, "WWW-Authenticate")
            == CHALLENGE
            == ('Bearer realm="pgpool-worker metrics"')
        )
        assert b"worker_" not in answer, "no metric in a refusal"
    assert len(set(answers[:-1])) == 1, "a refusal says nothing of what was wrong"
    log = worker.log()
    assert TOKEN not in log and TOKEN[:-1] not in log and "Traceback" not in log, log
    assert "(/metrics: bearer token)" in log


async def test_health_and_readiness_need_no_token(spawn: Spawn, counters: Counters) -> None:
    worker, port = await bearer_worker(spawn)
    for path in ("/healthz", "/readyz"):
        answer = await exchange(port, request(path))
        assert status_of(answer) == 200, answer[:300]
        assert header_of(answer, "WWW-Authenticate") is None
    # Wrong credentials on them are ignored too: probes are never refused for a header.
    assert status_of(await exchange(port, request("/readyz", "Authorization: Bearer no"))) == 200
    assert TOKEN not in worker.log()


async def test_without_metrics_auth_the_metrics_are_open(spawn: Spawn, counters: Counters) -> None:
    worker, port = await listening_worker(spawn)
    assert status_of(await exchange(port, request("/metrics"))) == 200
    assert status_of(await exchange(port, request("/metrics", "Authorization: Bearer x"))) == 200
    assert "(/metrics: no authentication)" in worker.log()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"METRICS_AUTH": "bearer"}, "METRICS_AUTH=bearer needs METRICS_TOKEN"),
        (
            {"METRICS_AUTH": "bearer", "METRICS_TOKEN": ""},
            "METRICS_AUTH=bearer needs METRICS_TOKEN",
        ),
        ({"METRICS_AUTH": "bearer", "METRICS_TOKEN": "   "}, "needs METRICS_TOKEN"),
        ({"METRICS_AUTH": "bearer", "METRICS_TOKEN": "sh0rt-s3cret"}, "METRICS_TOKEN: expected 16"),
        ({"METRICS_AUTH": "bearer", "METRICS_TOKEN": f"{TOKEN} x"}, "without spaces"),
        ({"METRICS_TOKEN": TOKEN}, "METRICS_AUTH=none leaves /metrics open"),
        ({"METRICS_AUTH": "basic", "METRICS_TOKEN": TOKEN}, "METRICS_AUTH: Input should be"),
    ],
)
def test_a_worker_with_a_missing_or_bad_token_refuses_to_start(
    config: Config, env: dict[str, str], expected: str
) -> None:
    error = the_error(run(config, "-m", "arq", "worker.Settings", **env))
    assert expected in error and "METRICS_" in error, error
    for secret in (TOKEN, "sh0rt-s3cret"):
        assert secret not in error, "the error never shows the token"


def test_the_token_is_masked_in_the_configuration() -> None:
    config = load_config(_env_file=None, metrics_auth="bearer", metrics_token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    assert TOKEN not in str(config.model_dump()) and TOKEN not in config.model_dump_json()
    assert config.metrics_token is not None and config.metrics_token.get_secret_value() == TOKEN
    with pytest.raises(ConfigError) as info:
        load_config(_env_file=None, metrics_auth="bearer", metrics_token=f"{TOKEN}\n")
    assert TOKEN not in str(info.value)
