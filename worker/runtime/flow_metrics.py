"""The flow-control gauges of ``/metrics`` (docs/flow-control.md, Operating it), read from Redis
when Prometheus scrapes, as the queue gauges are (``worker/runtime/operations.py``), through
``worker/queue/flow_usage.py``:

* ``worker_flow_in_use{limit}``: jobs holding a concurrency limit now, summed over its keys;
* ``worker_flow_blocked{limit}``: jobs waiting on a limit or a rate, summed over its keys;
* ``worker_flow_paused{job}``: 1 for each paused job name (``*``: the whole queue).

The label is the limit's name, never its key (keys may be user ids: unbounded). A scrape reads at
most ``MAX_GATES`` gates, found by a SCAN of at most ``MAX_SCAN`` keys; a limit's series follow the
limits and pauses that exist now (those gone are dropped). They describe the whole queue, so every
worker reports the same values: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from worker.queue.flow_usage import POLL_GATES, POLL_SCAN, FlowState

MAX_GATES = POLL_GATES  # gates read per scrape
MAX_SCAN = POLL_SCAN  # keys a scrape's SCAN looks at
MAX_SERIES = 200  # limit names and paused names shown per scrape


class FlowGauges:
    """The three gauges, registered on one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_use = Gauge(
            "worker_flow_in_use",
            "Jobs holding a concurrency limit now, all its keys (docs/flow-control.md).",
            ["limit"],
            registry=registry,
        )
        self.blocked = Gauge(
            "worker_flow_blocked",
            "Jobs waiting on a concurrency limit or a rate, all its keys.",
            ["limit"],
            registry=registry,
        )
        self.paused = Gauge(
            "worker_flow_paused",
            "1 for a paused job name ('*': the whole queue).",
            ["job"],
            registry=registry,
        )

    def set(self, state: FlowState) -> None:
        """Replace every series with those of ``state``."""
        for gauge in (self.in_use, self.blocked, self.paused):
            gauge.clear()
        for limit in state.limits[:MAX_SERIES]:
            if limit.in_use is not None:
                self.in_use.labels(limit.name).set(limit.in_use)
            self.blocked.labels(limit.name).set(limit.blocked)
        for name in state.paused[:MAX_SERIES]:
            self.paused.labels(name).set(1)
