"""README.md's Layout section against the tree: one row for every module of worker/ and jobs/ (their
``.py`` files, package ``__init__.py`` files excepted: the package rows describe those), none for a
module that is gone, and every other path it names exists. Its Architecture section has one
mermaid picture, and every module it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PACKAGES = ("worker", "jobs")
CODE = re.compile(r"`([^`]+)`")


def section(title: str) -> str:
    """The text of the README's ``## <title>`` section, up to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    found = re.search(
        rf"^## {re.escape(title)}\n(?P<body>.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert found, f"README.md has no '## {title}' section"
    return found.group("body")


def layout_rows() -> list[list[str]]:
    """The paths named (in backticks) in the first cell of each row of the Layout table."""
    rows = []
    for line in section("Layout").splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        first = line.split("|")[1]
        rows.append([path.strip() for path in CODE.findall(first)])
    return [row for row in rows if row]  # the header row names no path


def modules_in_tree() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }


def test_layout_lists_every_module_of_worker_and_jobs_once() -> None:
    rows = layout_rows()
    crowded = [row for row in rows if sum(p.endswith(".py") for p in row) > 1]
    assert not crowded, f"README Layout: one module per row, not {crowded}"
    listed = [p for row in rows for p in row if p.endswith(".py")]
    twice = sorted({p for p in listed if listed.count(p) > 1})
    tree = modules_in_tree()
    missing = sorted(tree - set(listed))
    extra = sorted(
        p
        for p in set(listed)
        if p.startswith(tuple(f"{pkg}/" for pkg in PACKAGES)) and p not in tree
    )
    problems = [
        *(f"missing from README Layout: {p}" for p in missing),
        *(f"in README Layout but not in the tree: {p}" for p in extra),
        *(f"listed twice in README Layout: {p}" for p in twice),
    ]
    assert not problems, "\n".join(problems)


def test_every_path_in_layout_exists() -> None:
    gone = [p for row in layout_rows() for p in row if not (ROOT / p.rstrip("/")).exists()]
    assert not gone, "README Layout names paths that do not exist: " + ", ".join(gone)


def test_architecture_has_one_mermaid_picture_naming_real_modules() -> None:
    body = section("Architecture")
    pictures = re.findall(r"^```mermaid\n(.*?)^```", body, re.MULTILINE | re.DOTALL)
    assert len(pictures) == 1, f"README Architecture: {len(pictures)} mermaid pictures, not one"
    named = set(re.findall(r"(?:worker|jobs)/[\w/]+\.py", body))
    assert named, "README Architecture names no module"
    gone = sorted(p for p in named if not (ROOT / p).is_file())
    assert not gone, "README Architecture names modules that do not exist: " + ", ".join(gone)
