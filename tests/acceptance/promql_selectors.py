"""The series selectors of a PromQL expression, for the tests that check alert rules and KEDA's
query name only metrics (and label values) the worker exports. A small reader of the PromQL these
files use (selectors, functions, aggregations with ``by``/``without``, binary operators, ranges),
not a parser of all of PromQL: anything it does not know is refused, so a test fails rather than
passes over it. ``promtool`` checks the full syntax where it is installed."""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"
FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "avg",
        "avg_over_time",
        "clamp_max",
        "clamp_min",
        "count",
        "delta",
        "deriv",
        "histogram_quantile",
        "increase",
        "irate",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "rate",
        "sum",
    }
)
KEYWORDS = frozenset({"and", "or", "unless", "bool"})
RANGE = re.compile(r"\[\s*\d+[smhdw]\s*(?::\s*\d*[smhdw]?\s*)?\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
WITH_LABELS = re.compile(rf"(?<![\w.:])({NAME})\s*\{{([^{{}}]*)\}}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
WORD = re.compile(rf"(?<![\w.:])({NAME})(\s*\()?")
NUMBER_OR_OPERATOR = re.compile(r"^[\s\d.()+\-*/%^<>=!,]*$")


@dataclass(frozen=True)
class Selector:
    """A metric name and its label matchers ``(label, operator, value)``."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...] = ()


def _matchers(block: str) -> tuple[tuple[str, str, str], ...]:
    found, pos = [], 0
    while pos < len(block.rstrip()):
        match = MATCHER.match(block, pos)
        if match is None:
            raise ValueError(f"label matchers not understood: {{{block}}}")
        found.append((match.group(1), match.group(2), match.group(3)))
        pos = match.end()
    return tuple(found)


def selectors(expr: str) -> list[Selector]:
    """Every series selector of ``expr``; ValueError on a function or a construct not known here."""
    text = GROUPING.sub(" ", RANGE.sub(" ", expr))
    found = [Selector(m.group(1), _matchers(m.group(2))) for m in WITH_LABELS.finditer(text)]
    rest = WITH_LABELS.sub(" 0 ", text)
    if "{" in rest or "}" in rest or "[" in rest or '"' in rest:
        raise ValueError(f"not understood: {expr!r}")
    for match in WORD.finditer(rest):
        word, call = match.group(1), match.group(2)
        if call:
            if word not in FUNCTIONS:
                raise ValueError(f"unknown function {word!r} in {expr!r}")
        elif word not in KEYWORDS:
            found.append(Selector(word))
    if not NUMBER_OR_OPERATOR.match(WORD.sub(" ", rest)):
        raise ValueError(f"not understood: {expr!r}")
    return found
