"""``arq worker.Settings`` runs on uvloop without asyncio's event loop policy API, which Python 3.14
deprecates (and 3.16 removes): the settings import cleanly with warnings as errors, and an ``arq``
worker built from them runs its loop on uvloop."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]

# Before Python 3.14 the policy functions do not warn yet: here they warn as 3.14's do.
AS_IN_PYTHON_314 = """
import asyncio, sys, warnings

def deprecate(name):
    original = getattr(asyncio, name)

    def call(*args, **kwargs):
        warnings.warn(f"asyncio.{name} is deprecated", DeprecationWarning, stacklevel=2)
        return original(*args, **kwargs)

    setattr(asyncio, name, call)

if sys.version_info < (3, 14):
    for name in ("get_event_loop_policy", "set_event_loop_policy"):
        deprecate(name)
"""

IMPORT_SETTINGS = """
import worker.settings
print(type(asyncio.get_event_loop()).__module__)
"""

# Settings of a probe: the real ones, with a startup hook that reports the loop it runs on.
PROBE_SETTINGS = """
import asyncio
import sys

from worker.settings import Settings


async def report_loop(ctx):
    sys.stderr.write(f"event loop: {type(asyncio.get_running_loop()).__module__}\\n")


ProbeSettings = {k: v for k, v in vars(Settings).items() if not k.startswith("__")}
ProbeSettings.update(on_startup=report_loop, on_shutdown=None, cron_jobs=None)
"""


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=REDIS_URL, CRON_DEACTIVATE="", METRICS_PORT="0")
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("options", "extra"),
    [
        (["-W", "error"], {}),
        (["-W", "error::DeprecationWarning"], {"PYTHONWARNINGS": "error"}),
    ],
    ids=["W-error", "W-error-DeprecationWarning+PYTHONWARNINGS"],
)
def test_settings_import_with_warnings_as_errors(
    options: list[str], extra: dict[str, str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, *options, "-c", AS_IN_PYTHON_314 + IMPORT_SETTINGS],
        cwd=tmp_path,
        env=environment(**extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # The loop arq's Worker takes (asyncio.get_event_loop(), outside a running loop).
    assert done.stdout.strip() == "uvloop"


def test_an_arq_worker_runs_on_uvloop(tmp_path: Path) -> None:
    (tmp_path / "loop_probe.py").write_text(AS_IN_PYTHON_314 + PROBE_SETTINGS, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::DeprecationWarning",
            # arq's Worker.close() still calls redis' deprecated close(): python-arq/arq#418
            "-W",
            "ignore:Call to deprecated close:DeprecationWarning",
            "-m",
            "arq",
            "loop_probe.ProbeSettings",
            "--burst",
        ],
        cwd=tmp_path,  # the `arq` command imports loop_probe from its working directory
        env=environment(QUEUE_NAME=f"test:{uuid.uuid4().hex[:12]}", LOG_FORMAT="text"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "event loop: uvloop\n" in done.stderr, done.stderr
