"""Prometheus metrics: one registry per process (``ServiceCollection.metrics``).

Counters and histograms that code updates as things happen live on :class:`Metrics`
(``metrics.logins.labels(result="ok").inc()``). Values that already exist somewhere (how
many connections are open, how deep a queue is, whether a link is up) are read when
Prometheus scrapes, through :meth:`Metrics.gauges` and :meth:`Metrics.counters`, so the
hot paths pay nothing for them. A service registers those in ``start``; any later
feature (push queues, media) registers its own the same way.

Each process has its own registry rather than ``prometheus_client``'s global one, so
several in-process servers (the tests) never see each other's numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from twisted.logger import Logger

log = Logger(namespace="teamtalk.metrics")

#: (label values, value) pairs read at scrape time.
Samples = Iterable[tuple[Sequence[str], float]]

#: Seconds: fine at the low end, where a healthy server lives.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _ScrapeTime(Collector):
    """One metric family whose samples a function gives at scrape time."""

    def __init__(
        self,
        family: type[GaugeMetricFamily] | type[CounterMetricFamily],
        name: str,
        documentation: str,
        labels: Sequence[str],
        read: Callable[[], Samples],
    ) -> None:
        self.family = family
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.read = read

    def collect(self) -> Iterator[Metric]:
        metric = self.family(self.name, self.documentation, labels=self.labels)
        try:
            for values, value in self.read():
                metric.add_metric(list(values), value)
        except Exception:
            # One broken reading must not cost the whole scrape.
            log.failure("reading metric {name} failed", name=self.name)
            return
        yield metric

    def describe(self) -> Iterator[Metric]:
        yield self.family(self.name, self.documentation, labels=self.labels)


class Metrics:
    """The registry and the metrics teamtalk updates as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.logins = Counter(
            "teamtalk_logins",
            "Login attempts on the msg service by result "
            "(ok, wrong_password, unknown_user, disabled, locked_out, store_error).",
            ["result"],
            registry=r,
        )
        self.messages = Counter(
            "teamtalk_messages",
            "Chat messages by session type and outcome: acked (stored, or a recognised "
            "resend of a stored one), stored (new rows), refused (not stored, no ack), "
            "failed (the write failed, no ack).",
            ["session_type", "outcome"],
            registry=r,
        )
        self.kicks = Counter(
            "teamtalk_kicks",
            "Connections kicked with CID_LOGIN_KICK_USER, by cause.",
            ["cause"],
            registry=r,
        )
        self.store_batch_size = Histogram(
            "teamtalk_store_batch_size",
            "Jobs per group commit of the store's writer.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "teamtalk_store_commit_seconds",
            "Seconds from the start of a write batch to its durable COMMIT.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reactor_lag_seconds = Histogram(
            "teamtalk_reactor_lag_seconds",
            "How late a timer that should fire every 0.25 s ran: the reactor's tick lag.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def gauges(
        self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Samples]
    ) -> None:
        """A gauge family read at scrape time: ``read()`` gives (label values, value)."""
        self.registry.register(_ScrapeTime(GaugeMetricFamily, name, documentation, labels, read))

    def counters(
        self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Samples]
    ) -> None:
        """A counter family kept elsewhere as plain numbers, read at scrape time."""
        self.registry.register(_ScrapeTime(CounterMetricFamily, name, documentation, labels, read))

    def exposition(self) -> bytes:
        """The Prometheus text format of everything registered."""
        return generate_latest(self.registry)


def one(value: Any) -> Samples:
    """Samples of an unlabelled family."""
    return [((), float(value))]
