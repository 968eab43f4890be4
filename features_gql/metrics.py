"""Prometheus metrics, fed by operation events and by the HTTP adapter.

Every service owns its registry (several services can live in one process, as in the
tests). Labels are bounded: store names, operations, outcomes, error codes, and GraphQL
operation names capped at :data:`MAX_OPERATION_NAMES` distinct values. Resource ids and
feature names are never labels.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from features_gql.events import OperationEvent, SinkHealth

if TYPE_CHECKING:
    from features_gql.edge import EdgeSync
    from features_gql.feed import ChangeFeed

#: Seconds. A store call on the hot path takes tens of microseconds (memory) to a few
#: milliseconds (SQLite, MongoDB on a LAN); the top buckets reach past the 2 s deadline.
STORE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
#: Seconds. A GraphQL request adds parsing, validation and HTTP to the store call.
REQUEST_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

MAX_OPERATION_NAMES = 200
_OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")


class _SinkHealthCollector(Collector):
    """Reads the dispatcher's counts at scrape time, so the sink thread never touches metrics."""

    def __init__(self, health: Callable[[], SinkHealth]) -> None:
        self._health = health

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        health = self._health()
        failures = CounterMetricFamily(
            "features_gql_sink_failures",
            "Operation events a logging or metrics sink raised on.",
            labels=["sink"],
        )
        for sink, count in sorted(health.failures.items()):
            failures.add_metric([sink], count)
        yield failures
        yield CounterMetricFamily(
            "features_gql_sink_events_dropped",
            "Operation events dropped because the sink queue was full (sinks too slow).",
            value=health.dropped,
        )


class _FeedCollector(Collector):
    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(
            "features_gql_subscriptions_dropped",
            "Subscribers dropped for falling too far behind (they resume from their revision).",
            value=self._feed.dropped,
        )


class _EdgeCollector(Collector):
    def __init__(self, edge: EdgeSync) -> None:
        self._edge = edge

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        status = self._edge.status()
        lag = status.lag_seconds
        yield GaugeMetricFamily(
            "features_gql_edge_lag_seconds",
            "How far the edge's copy may be behind its upstream: 0 while connected and "
            "caught up, else seconds since it last was (NaN before the first sync).",
            value=float("nan") if lag is None else lag,
        )
        yield GaugeMetricFamily(
            "features_gql_edge_connected",
            "1 while the edge follows its upstream.",
            value=1 if status.connected else 0,
        )
        yield GaugeMetricFamily(
            "features_gql_edge_revision",
            "The upstream revision the edge's copy reflects.",
            value=status.revision if status.revision is not None else float("nan"),
        )
        yield GaugeMetricFamily(
            "features_gql_edge_upstream_revision",
            "The upstream's revision, as last heard.",
            value=status.upstream_revision
            if status.upstream_revision is not None
            else float("nan"),
        )
        yield CounterMetricFamily(
            "features_gql_edge_reconnects",
            "Times the edge lost its upstream and connected again.",
            value=status.reconnects,
        )
        yield CounterMetricFamily(
            "features_gql_edge_resyncs",
            "Times the edge reloaded a snapshot (first start, upstream behind or restored).",
            value=status.resyncs,
        )


class Metrics:
    def __init__(self, sink_health: Callable[[], SinkHealth] | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.store_seconds = Histogram(
            "features_gql_store_operation_seconds",
            "Duration of store operations, by store, operation and outcome "
            "(ok, unavailable, timeout, conflict, error); injected=true marks drills.",
            ["store", "operation", "outcome", "injected"],
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        self.store_items = Counter(
            "features_gql_store_items",
            "Items asked in store operations (check_many and features_of batch many).",
            ["store", "operation"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "features_gql_graphql_request_seconds",
            "Duration of GraphQL requests, by operation name and outcome "
            "(ok, error: some field failed, rejected: the request could not execute).",
            ["operation", "outcome"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "features_gql_graphql_errors",
            "GraphQL errors answered, by extensions.code.",
            ["code"],
            registry=self.registry,
        )
        in_flight = Gauge(
            "features_gql_http_requests_in_flight",
            "HTTP requests being answered right now.",
            registry=self.registry,
        )
        #: Requests being answered; read at scrape time, so counting them takes no lock.
        self.requests_in_flight = 0
        in_flight.set_function(lambda: self.requests_in_flight)
        self.store_up = Gauge(
            "features_gql_store_up",
            "1 if the last readiness probe of the store succeeded, else 0.",
            registry=self.registry,
        )
        if sink_health is not None:
            self.registry.register(_SinkHealthCollector(sink_health))
        self._names: set[str] = set()
        self._store_children: dict[tuple[str, str, str, bool], Histogram] = {}
        self._request_children: dict[tuple[str | None, str], Histogram] = {}
        self._names_lock = threading.Lock()
        self.subscription_events: Counter | None = None

    # -- snapshots and feed -------------------------------------------------------------

    def track_feed(self, feed: ChangeFeed) -> None:
        """Subscription metrics, read from the change feed at scrape time."""
        Gauge(
            "features_gql_subscriptions",
            "Change-feed subscriptions served by this process right now.",
            registry=self.registry,
        ).set_function(lambda: feed.subscribers)
        self.registry.register(_FeedCollector(feed))
        self.subscription_events = Counter(
            "features_gql_subscription_events",
            "Change events sent to subscribers.",
            registry=self.registry,
        )

    def track_edge(self, edge: EdgeSync) -> None:
        """An edge's sync metrics, read from its follower at scrape time."""
        self.registry.register(_EdgeCollector(edge))

    def observe_operation(self, event: OperationEvent) -> None:
        """An inline operation sink: cheap, never blocks."""
        # Labelled children are cached: `.labels()` costs microseconds per call, and the
        # label sets are few (bounded by stores x operations x outcomes).
        key = (event.store, event.op, event.outcome, event.injected)
        child = self._store_children.get(key)
        if child is None:
            child = self.store_seconds.labels(
                event.store, event.op, event.outcome, "true" if event.injected else "false"
            )
            self._store_children[key] = child
        child.observe(event.duration)
        if event.items != 1:
            self.store_items.labels(event.store, event.op).inc(event.items)

    def operation_label(self, name: str | None) -> str:
        """The label for a client-chosen operation name, keeping cardinality bounded."""
        if not name:
            return "anonymous"
        if _OPERATION_NAME.fullmatch(name) is None:
            return "invalid"
        if name in self._names:
            return name
        with self._names_lock:
            if len(self._names) >= MAX_OPERATION_NAMES:
                return "other"
            self._names.add(name)
        return name

    def observe_request(
        self, operation: str | None, outcome: str, seconds: float, codes: Iterable[str]
    ) -> None:
        key = (operation, outcome)
        child = self._request_children.get(key)
        if child is None:
            child = self.request_seconds.labels(self.operation_label(operation), outcome)
            if len(self._request_children) < 4 * MAX_OPERATION_NAMES:
                self._request_children[key] = child
        child.observe(seconds)
        for code in codes:
            self.errors.labels(code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
