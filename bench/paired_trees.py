"""The two source trees of a paired benchmark: a commit's tree exported with ``git archive`` and a
snapshot of the working tree (tracked and untracked files, as they are now), each in a scratch
directory, so that neither changes while it is measured and nothing in /work/main is checked out.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT
from jobs.errors import WorkerError

SKIPPED = {".env"}  # never copied: the measured workers are configured by the environment only


class TreeError(WorkerError):
    """{details}"""


@dataclass(frozen=True)
class Tree:
    """One side of the pair: where its files are and what they are."""

    label: str  # "new" or "old"
    path: Path
    describe: str  # for the report: commit and subject, or "working tree at ..."
    digest: str  # of its worker/ and jobs/ code


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False, timeout=60)


def resolve(rev: str) -> tuple[str, str]:
    """The full commit id of ``rev`` and its one-line description (``abc1234 subject``)."""
    found = _git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        raise TreeError(details=f"--against {rev!r}: not a commit of {ROOT}")
    commit = found.stdout.decode().strip()
    return commit, _subject(commit)


def _subject(commit: str) -> str:
    """``abc1234 subject``, at most 80 characters, without backticks (it goes into markdown)."""
    subject = _git("log", "-1", "--format=%h %s", commit).stdout.decode().strip() or "unknown"
    subject = subject.replace("`", "'")
    return subject if len(subject) <= 80 else subject[:79] + "…"


def code_digest(tree: Path) -> str:
    """A digest of a tree's worker/ and jobs/ code (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted([*tree.glob("worker/**/*.py"), *tree.glob("jobs/**/*.py")]):
        digest.update(path.relative_to(tree).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def export_commit(commit: str, subject: str, into: Path) -> Tree:
    """``git archive COMMIT | tar -x`` into ``into`` (created)."""
    into.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "archive", "--format=tar", commit],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert archive.stdout is not None
    untar = subprocess.run(
        ["tar", "-x", "-C", str(into)],
        stdin=archive.stdout,
        capture_output=True,
        check=False,
        timeout=120,
    )
    archive.stdout.close()
    _, archive_err = archive.communicate(timeout=120)
    if archive.returncode != 0 or untar.returncode != 0:
        error = (archive_err or untar.stderr).decode(errors="replace").strip().splitlines()
        raise TreeError(details=f"git archive {commit[:12]} failed: {error[-1] if error else '?'}")
    return Tree("old", into, subject, code_digest(into))


def snapshot_working_tree(into: Path) -> Tree:
    """A copy of the working tree's tracked and untracked (not ignored) files as they are now."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed.returncode != 0:
        raise TreeError(details=f"git ls-files failed in {ROOT}")
    for name in sorted(set(listed.stdout.decode().split("\0"))):
        source = ROOT / name
        if not name or name in SKIPPED or not source.is_file():  # deleted, or a submodule
            continue
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    head = _subject("HEAD")
    dirty = _git("status", "--porcelain", "--", "worker", "jobs").stdout.strip()
    describe = f"working tree at {head}" + (" + uncommitted changes" if dirty else "")
    return Tree("new", into, describe, code_digest(into))


def check_importable(tree: Tree, settings: str, env: dict[str, str]) -> None:
    """The tree's own ``settings`` (e.g. ``worker.Settings``) import from the tree itself, in a
    process of their own with the bench's interpreter (nothing of the tree enters this process)."""
    module, _, name = settings.rpartition(".")
    probe = (
        f"import importlib, sys; m = importlib.import_module({module!r}); getattr(m, {name!r}); "
        "print(m.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tree.path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise TreeError(details=f"{tree.label} tree ({tree.describe}): {settings}: {last}")
    where = Path(done.stdout.strip().splitlines()[-1]).resolve()
    if not where.is_relative_to(tree.path.resolve()):
        raise TreeError(
            details=f"{tree.label} tree: {module} was imported from {where}, not from {tree.path}"
        )
