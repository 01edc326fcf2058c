"""Each flow-control limit's use now, as ``status``, ``/metrics``, the dashboard and ``limits``
show it (docs/flow-control.md), and the gates a job waits on (``inspect``).

Use per limit is summed over its gates (one per key; keys may be user ids, so a limit's gates are
counted, never listed): holders still in their lease (in use) and jobs waiting (blocked). The gates
read are those of ``<q>:flow:gates`` (every gate that blocked a job and still has holders or
waiting jobs), the unkeyed gate of each declared limit, and those a bounded SCAN finds; past
``max_gates`` the sums cover the gates read and ``complete`` is false.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from jobs.registry import JOBS, JobSpec
from worker.core.clock import now_ms
from worker.queue.flow_admin import BATCH, SCAN_COUNT, glob, overrides, pauses
from worker.queue.keys import IN_PROGRESS_PREFIX, blocked_key, gate_key, gates_key

# The bounds of readers that poll (``/metrics``, the dashboard): gates read, keys a SCAN looks at.
POLL_GATES, POLL_SCAN = 2_000, 20_000

# Per gate: its holders in their lease (a concurrency gate: score not yet passed, or a lease key
# that lives) and its waiting jobs. KEYS: gate key, blocked key, pairwise. ARGV: now, then per gate
# 1 (concurrency) or 0. Returns {in use, blocked} per gate.
USAGE_SCRIPT = f"""
local now, out = tonumber(ARGV[1]), {{}}
for i = 1, #KEYS, 2 do
  local held = 0
  if ARGV[(i + 1) / 2 + 1] == '1' then
    held = redis.call('ZCOUNT', KEYS[i], now, '+inf')
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', '(' .. now, 'LIMIT', 0, 1000)) do
      if redis.call('EXISTS', '{IN_PROGRESS_PREFIX}' .. m) == 1 then held = held + 1 end
    end
  end
  out[#out + 1] = held
  out[#out + 1] = redis.call('ZCARD', KEYS[i + 1])
end
return out
"""


@dataclass
class LimitUse:
    """One limit: what the jobs declare, what is set at run time, and its use now."""

    name: str
    kind: str  # "concurrency" or "rate"
    declared: dict[str, Any] | None = None  # {"max": 20} or {"limit": 14, "per_ms": 1000, ...}
    jobs: list[str] = field(default_factory=list)  # the registry's jobs that declare it
    override: dict[str, Any] | None = None  # <q>:flow:limits' value
    in_use: int | None = None  # concurrency: holders now, every key; None for a rate
    blocked: int = 0  # jobs waiting on it, every key
    gates: int = 0  # its gates (keys) with holders or waiting jobs

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "declared": self.declared,
            "jobs": self.jobs,
            "override": self.override,
            "in_use": self.in_use,
            "blocked": self.blocked,
            "keys": self.gates,
        }


@dataclass
class FlowState:
    """The paused names (with the jobs waiting on each pause) and every limit known."""

    paused: list[str]
    paused_waiting: dict[str, int]
    limits: list[LimitUse]
    complete: bool  # False: more gates than max_gates; the sums cover those read

    def view(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "paused_waiting": self.paused_waiting,
            "limits": [limit.view() for limit in self.limits],
            "complete": self.complete,
        }


def declared_limits(specs: Iterable[JobSpec[Any, Any]] = JOBS) -> dict[str, LimitUse]:
    """The limits the jobs declare (JobSpec.flow), by name, with the jobs that declare each."""
    found: dict[str, LimitUse] = {}
    for spec in specs:
        flow = spec.flow
        if flow is None:
            continue
        for c in flow.concurrency:
            limit = found.setdefault(c.name, LimitUse(c.name, "concurrency", {"max": c.max}))
            limit.jobs.append(spec.name)
        for r in flow.rates:
            declared = {"limit": r.limit, "per_ms": round(r.per * 1000), "burst": r.burst}
            found.setdefault(r.name, LimitUse(r.name, "rate", declared)).jobs.append(spec.name)
    return found


def unkeyed_gates(specs: Iterable[JobSpec[Any, Any]] = JOBS) -> set[str]:
    """The one gate of each declared limit without a key ("c:heavy-db:")."""
    gates: set[str] = set()
    for spec in specs:
        if spec.flow is not None:
            gates.update(f"c:{c.name}:" for c in spec.flow.concurrency if c.key is None)
    return gates


def candidate_gates(payload: bytes | None) -> list[str]:
    """The gates a job with this payload may wait on: its name's pause, its limits, its lane."""
    try:
        job = json.loads(payload or b"")
    except ValueError:
        return []
    if not isinstance(job, dict):
        return []
    gates = [f"p:{job['f']}"] if isinstance(job.get("f"), str) else []
    flow: dict[str, Any] = job["flow"] if isinstance(job.get("flow"), dict) else {}
    for kind, field_name in (("c", "concurrency"), ("r", "rate")):
        entries = flow.get(field_name)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                key = entry.get("key") if isinstance(entry.get("key"), str) else ""
                gates.append(f"{kind}:{entry['name']}:{key}")
    if isinstance(flow.get("fair"), str):
        gates.append(f"l:{flow['fair']}")
    return gates


async def blocked_on(redis: Redis, queue: str, job_id: str, payload: bytes | None) -> list[str]:
    """The gates whose blocked set holds ``job_id`` (for ``inspect``)."""
    gates = candidate_gates(payload)
    async with redis.pipeline(transaction=False) as pipe:
        for gate in gates:
            pipe.zscore(blocked_key(queue, gate), job_id)
        scores = await pipe.execute() if gates else []
    return [gate for gate, score in zip(gates, scores, strict=True) if score is not None]


async def _gates(
    redis: Redis, queue: str, known: set[str], max_gates: int, max_scan: int
) -> tuple[set[str], bool]:
    """The gates to read: ``known``, those of the gates hash, and the concurrency gates a SCAN of
    at most ``max_scan`` keys finds; False with them when there may be more."""
    gates = set(known)
    async for gate, _ in redis.hscan_iter(gates_key(queue), count=SCAN_COUNT):
        if len(gates) >= max_gates:
            return gates, False
        if gate[:2] in (b"c:", b"r:"):
            gates.add(gate.decode())
    prefix = gate_key(queue, "")
    calls, cursor = 0, 0
    while True:
        cursor, found = await redis.scan(cursor, match=glob(prefix) + "c:*", count=SCAN_COUNT)
        gates.update(k.decode()[len(prefix) :] for k in found)
        calls += 1
        if cursor == 0:
            return gates, len(gates) <= max_gates
        if len(gates) >= max_gates or calls * SCAN_COUNT >= max_scan:
            return gates, False


async def flow_state(
    redis: Redis,
    queue: str,
    specs: Iterable[JobSpec[Any, Any]] = JOBS,
    max_gates: int = 10_000,
    max_scan: int = 1_000_000,
) -> FlowState:
    """Paused names and every limit (declared or set at run time) with its use now: sums over at
    most ``max_gates`` gates, found by a SCAN of at most ``max_scan`` keys (module docstring)."""
    specs = tuple(specs)
    limits = declared_limits(specs)
    for name, value in (await overrides(redis, queue)).items():
        kind = "rate" if "limit" in value else "concurrency"
        limits.setdefault(name, LimitUse(name, kind)).override = value
    gates, complete = await _gates(redis, queue, unkeyed_gates(specs), max_gates, max_scan)
    ordered = sorted(gates)[:max_gates]
    now = now_ms()
    for start in range(0, len(ordered), BATCH):
        chunk = ordered[start : start + BATCH]
        keys = [k for g in chunk for k in (gate_key(queue, g), blocked_key(queue, g))]
        kinds = ["1" if g.startswith("c:") else "0" for g in chunk]
        counts = await redis.eval(USAGE_SCRIPT, len(keys), *keys, str(now), *kinds)  # type: ignore[misc]
        for i, gate in enumerate(chunk):
            kind, name = ("concurrency" if gate[0] == "c" else "rate"), gate.split(":")[1]
            limit = limits.setdefault(name, LimitUse(name, kind))
            held, queued = int(counts[2 * i]), int(counts[2 * i + 1])
            limit.gates += 1 if held or queued else 0
            limit.blocked += queued
            if kind == "concurrency":
                limit.in_use = (limit.in_use or 0) + held
    for limit in limits.values():
        limit.in_use = (limit.in_use or 0) if limit.kind == "concurrency" else None
    paused, waiting = await pauses(redis, queue)
    return FlowState(paused, waiting, sorted(limits.values(), key=lambda u: u.name), complete)
