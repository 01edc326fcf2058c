"""The TypeScript client (clients/node) made ready to run: ``node`` and ``npm`` found (Node.js 20
or later), its npm dependencies installed (``npm ci``, when node_modules is missing or older than
the lock file) and the client built (``tsc``). Shared by the bench (its producers measurements) and
tests/acceptance/test_node_client.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.common import ROOT

NODE_DIR = ROOT / "clients" / "node"
MIN_NODE = 20
INSTALL = (
    f"install Node.js {MIN_NODE} or later with npm (Debian or Ubuntu: `apt-get install nodejs npm`; "
    "elsewhere the nodejs.org installer)"
)


class NodeUnavailable(RuntimeError):
    """node or npm is missing or too old, or the client could not be installed or built."""


def node_tools(path: str | None = None) -> tuple[str, str]:
    """The paths of ``node`` and ``npm`` on ``path`` (default: PATH); raises NodeUnavailable,
    naming what to install, when either is missing or node is older than MIN_NODE."""
    node, npm = shutil.which("node", path=path), shutil.which("npm", path=path)
    missing = [name for name, found in (("node", node), ("npm", npm)) if found is None]
    if node is None or npm is None:
        raise NodeUnavailable(
            f"{' and '.join(missing)} not found: the TypeScript client needs them; {INSTALL}"
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < MIN_NODE:
        raise NodeUnavailable(f"node {version or '(no version)'} is too old; {INSTALL}")
    return node, npm


def run_in_client(
    argv: list[str], timeout: float, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in clients/node, output captured as text."""
    return subprocess.run(
        argv, cwd=NODE_DIR, capture_output=True, text=True, check=False, timeout=timeout, **kwargs
    )


def _stale(installed: Path) -> bool:
    lock = NODE_DIR / "package-lock.json"
    return not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime


def built_client() -> str:
    """``node``, with the client's npm dependencies installed and the client built (dist/)."""
    node, npm = node_tools()
    if _stale(NODE_DIR / "node_modules" / ".package-lock.json"):
        done = run_in_client([npm, "ci", "--no-audit", "--no-fund"], timeout=600)
        if done.returncode != 0:
            raise NodeUnavailable(f"npm ci failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    done = run_in_client([npm, "run", "build"], timeout=300)
    if done.returncode != 0:
        raise NodeUnavailable(f"the build failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    return node
