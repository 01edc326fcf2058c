"""The producers' figures (bench/producers.py) as a report: the "Producers" section of
docs/performance.md and the console's table, from bench/results/producers.json."""

from __future__ import annotations

from typing import Any

from bench.options import BULK_FACTOR
from bench.report import Entry, num, runs_of, runs_text, table, value

PREFIX = "producers:"
COMMIT, RELAY, NODE, PYTHON = (
    "producers:commit-start",
    "producers:relay",
    "producers:node-bulk",
    "producers:python-bulk",
)


def split(data: dict[str, Any]) -> dict[str, Any]:
    """The producers' part of a bench run's results (what bench/results/producers.json holds)."""
    entries = {k: v for k, v in data["measurements"].items() if k.startswith(PREFIX)}
    return {"meta": data["meta"], "options": data["options"], "measurements": entries}


def _rows(data: dict[str, Any]) -> list[tuple[str, str, float | None, int, float, bool, str]]:
    """(figure, wanted, reached, digits, bound, at least, the runs) for each target."""
    e: dict[str, Entry] = data["measurements"]

    def runs(key: str, metric: str, digits: int = 0) -> str:
        return runs_text(runs_of(e, key, metric), digits)

    rate = data["options"].get("latency_rate", 200)
    return [
        (
            f"transactional enqueue: commit → job start p50 at {rate:g} jobs/s, ms",
            "≤ 20",
            value(e, COMMIT, "p50_ms"),
            1,
            20.0,
            False,
            runs(COMMIT, "p50_ms", 1),
        ),
        (
            f"transactional enqueue: commit → job start p95 at {rate:g} jobs/s, ms",
            "-",
            value(e, COMMIT, "p95_ms"),
            1,
            float("inf"),
            False,
            runs(COMMIT, "p95_ms", 1),
        ),
        (
            "transactional enqueue: commit → pushed to Redis by the relay p50, ms",
            "-",
            value(e, COMMIT, "relay_p50_ms"),
            1,
            float("inf"),
            False,
            runs(COMMIT, "relay_p50_ms", 1),
        ),
        (
            f"outbox relay throughput ({num(value(e, RELAY, 'jobs'))} rows), jobs/s",
            "≥ 20,000",
            value(e, RELAY, "jobs_per_s"),
            0,
            20_000.0,
            True,
            runs(RELAY, "jobs_per_s"),
        ),
        (
            f"TypeScript client enqueueMany ({num(value(e, NODE, 'jobs'))} jobs), jobs/s",
            "≥ 20,000",
            value(e, NODE, "jobs_per_s"),
            0,
            20_000.0,
            True,
            runs(NODE, "jobs_per_s"),
        ),
        (
            f"slim client (pgpool_client) enqueue_many ({num(value(e, PYTHON, 'jobs'))}), jobs/s",
            "-",
            value(e, PYTHON, "slim_jobs_per_s"),
            0,
            0.0,
            True,
            runs(PYTHON, "slim_jobs_per_s"),
        ),
        (
            "worker's JobClient.enqueue_many (same jobs, same run), jobs/s",
            "-",
            value(e, PYTHON, "worker_jobs_per_s"),
            0,
            0.0,
            True,
            runs(PYTHON, "worker_jobs_per_s"),
        ),
        (
            "slim client / worker's enqueue_many (ratio, median of rounds)",
            "≥ 1.0 (no slower)",
            value(e, PYTHON, "slim_over_worker"),
            2,
            1.0,
            True,
            runs(PYTHON, "slim_over_worker", 2),
        ),
    ]


def producers_table(data: dict[str, Any]) -> str:
    rows = []
    for label, wanted, reached, digits, bound, at_least, runs in _rows(data):
        if wanted == "-":
            verdict = ""
        elif reached is None:
            verdict = "not measured"
        else:
            met = reached >= bound if at_least else reached <= bound
            verdict = "met" if met else "**missed**"
        rows.append([label, wanted, "**" + num(reached, digits) + "**", runs or "-", verdict])
    return table(["figure (median of rounds)", "wanted", "this run", "runs", "verdict"], rows)


def errors(data: dict[str, Any]) -> list[str]:
    return [
        f"{entry['label']}: {error.splitlines()[0] if error else error}"
        for entry in data["measurements"].values()
        for error in entry["errors"]
    ]


def console(data: dict[str, Any]) -> str:
    meta = data["meta"]
    text = f"\nproducers: {meta['rounds']} round(s), worker {meta['git']}\n\n"
    text += producers_table(data)
    found = errors(data)
    if found:
        text += "\nerrors:\n" + "\n".join(f"  {line}" for line in found) + "\n"
    return text


def markdown(data: dict[str, Any]) -> str:
    """The "Producers" section of docs/performance.md."""
    meta, o = data["meta"], data["options"]
    found = errors(data)
    failures = ("\nErrors in this run: " + "; ".join(found) + "\n") if found else ""
    return f"""## Producers

Measured by `python -m bench --only producers` (`make bench-producers`; a full `make bench` measures
them too) on {meta["date"]}: {meta["rounds"]} round(s), worker code at `{meta["git"]}`; numbers in
`bench/results/producers.json`. Same machine and caveats as the rest of this page.
{failures}
{producers_table(data)}
* **Commit → job start**: a worker at its defaults (its relay LISTENs for `enqueue_job()`'s
  NOTIFY; OUTBOX_POLL_INTERVAL 1 s beside it); `get_user` rows inserted with
  `SELECT enqueue_job(...)`, each statement its own transaction, paced at {o["latency_rate"]:g}/s
  for {o["latency_seconds"]:g} s. *Commit* is when the statement's reply (its commit) reached the
  bench; *start* is the `st` of the job's stored result: the worker's wall clock (ms) when it began
  the job. Both clocks are the same host's. *Pushed to Redis* is the payload's `et`, set by the
  relay when it enqueued the row. `st` and `et` are whole milliseconds (truncated), so 0.5 ms is
  added to each; sub-millisecond figures are within that rounding.
* **Relay throughput**: {o.get("relay_rows", 0):,} `noop` rows committed in one transaction (one
  NOTIFY) while a worker (`WORKER_MAX_JOBS` 20) runs; rows / (that commit → the last row's
  `relayed_at`, PostgreSQL's clock). The same worker process runs the relayed jobs meanwhile, as in
  production: its relay shares the event loop and the CPU with its jobs.
* **TypeScript client**: `node bench/node_enqueue.mjs` (clients/node built with `npm ci` and `tsc`
  first): `JobClient.enqueueMany("get_user", ...)` of {o.get("node_jobs", 0):,} jobs, 1,000 per
  script call, argument validation included, timed inside node from the call to its return; no
  worker running.
* **Slim client vs the worker's client**: `enqueue_many` of {o["enqueue_jobs"] * BULK_FACTOR:,} `get_user`
  jobs with `pgpool_client.Client` (its own connect) and with `worker.client.JobClient`, one after
  the other in alternating order, each on its own queue; no worker running.

"""  # noqa: S608  (markdown that names SQL, not SQL built from input)
