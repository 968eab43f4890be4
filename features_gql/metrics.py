"""Prometheus metrics, fed by operation events and by the HTTP adapter.

Every service owns its registry (several services can live in one process, as in the
tests). Labels are bounded: store names, operations, outcomes, error codes, and GraphQL
operation names capped at :data:`MAX_OPERATION_NAMES` distinct values. Resource ids and
feature names are never labels.
"""

from __future__ import annotations

import os
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from features_gql.events import OperationEvent, SinkHealth

if TYPE_CHECKING:
    from features_gql.edge import EdgeSync
    from features_gql.feed import ChangeFeed
    from features_gql.replication.follower import FollowerStatus

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


class Observer(Protocol):
    """One labelled child of a histogram."""

    def observe(self, amount: float) -> None: ...


class LabelledHistogram(Protocol):
    def labels(self, *values: str) -> Observer: ...


class _Buckets:
    """One child of a :class:`ProcessHistogram`: plain counts, one per bucket."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bound >= amount: Prometheus buckets are "less than or equal".
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount


class ProcessHistogram(Collector):
    """A labelled histogram of one process, kept in plain lists and read at scrape time.

    prometheus-client's Histogram takes a lock for the sum and for the bucket on every
    observation (0.6 us); on the request path, twice per flag check, that was measurable.
    Every observation happens on the event loop's thread and a scrape reads the counts
    between two of them, so no lock is needed. Workers (``--workers``) share files
    instead and keep prometheus-client's multiprocess histogram.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = list(labelnames)
        self._bounds = (*buckets, float("inf"))
        # Written as prometheus-client writes them ("5e-05", "+Inf").
        self._les = [floatToGoString(bound) for bound in self._bounds]  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], _Buckets] = {}

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes the labels {self._labelnames}")
            child = self._children[values] = _Buckets(self._bounds)
        return child

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            total = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._les, list(child.counts), strict=True):
                total += count
                buckets.append((le, total))
            family.add_metric(list(values), buckets, child.sum)
        yield family


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

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "features_gql_subscriptions",
            "Change-feed subscriptions served by this process right now.",
            value=self._feed.subscribers,
        )
        yield CounterMetricFamily(
            "features_gql_subscriptions_dropped",
            "Subscribers closed as too slow, or because the feed could not go on without a "
            "gap (they resume from their revision).",
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


class _FollowersCollector(Collector):
    """Every copy's follower (the catalog view, the change feed, an edge's), labelled by
    ``copy``: read from their one status at scrape time."""

    def __init__(self, followers: Callable[[], Mapping[str, FollowerStatus]]) -> None:
        self._followers = followers

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["copy"]
        following = GaugeMetricFamily(
            "features_gql_follower_following",
            "1 while the copy follows its source without an error.",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "features_gql_follower_lag_seconds",
            "How far the copy may be behind its source: 0 while caught up, else seconds "
            "since it last was (NaN before the first sync).",
            labels=labels,
        )
        revision = GaugeMetricFamily(
            "features_gql_follower_revision",
            "The source revision the copy reflects.",
            labels=labels,
        )
        loads = CounterMetricFamily(
            "features_gql_follower_loads",
            "Times the copy was loaded from its source (the first time, then after a "
            "trimmed log or a source that went back).",
            labels=labels,
        )
        for name, status in self._followers().items():
            seconds = status.lag_seconds
            following.add_metric([name], 1 if status.connected else 0)
            lag.add_metric([name], float("nan") if seconds is None else seconds)
            revision.add_metric(
                [name], float("nan") if status.revision is None else status.revision
            )
            loads.add_metric([name], status.loads)
        yield from (following, lag, revision, loads)


#: Set (by ``serve --workers N``) before prometheus-client is imported, this makes every
#: worker write its metrics to files in that directory, and any worker's /metrics add up
#: all of them: one coherent view whichever worker a scrape reaches.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def shared_between_processes() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


class Metrics:
    def __init__(self, sink_health: Callable[[], SinkHealth] | None = None) -> None:
        self.registry = CollectorRegistry()
        #: Workers of one service: metrics live in shared files (prometheus-client's
        #: multiprocess mode). Process collectors describe one process, so they are left out.
        self.shared = shared_between_processes()
        if not self.shared:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.store_seconds = self._histogram(
            "features_gql_store_operation_seconds",
            "Duration of store operations, by store, operation and outcome "
            "(ok, unavailable, timeout, conflict, error); injected=true marks drills.",
            ["store", "operation", "outcome", "injected"],
            STORE_BUCKETS,
        )
        self.store_items = Counter(
            "features_gql_store_items",
            "Items asked in store operations (check_many and features_of batch many).",
            ["store", "operation"],
            registry=self.registry,
        )
        self.request_seconds = self._histogram(
            "features_gql_graphql_request_seconds",
            "Duration of GraphQL requests, by operation name and outcome "
            "(ok, error: some field failed, rejected: the request could not execute).",
            ["operation", "outcome"],
            REQUEST_BUCKETS,
        )
        self.errors = Counter(
            "features_gql_graphql_errors",
            "GraphQL errors answered, by extensions.code.",
            ["code"],
            registry=self.registry,
        )
        self.ofrep_seconds = self._histogram(
            "features_gql_ofrep_request_seconds",
            "Duration of OFREP evaluations, by endpoint (evaluate, bulk) and outcome "
            "(ok, error: the store failed, rejected: refused before or instead of an answer).",
            ["endpoint", "outcome"],
            REQUEST_BUCKETS,
        )
        self.ofrep_errors = Counter(
            "features_gql_ofrep_errors",
            "OFREP errors answered, by code (the OFREP errorCode, or the store's error code "
            "for a GENERAL error).",
            ["code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "features_gql_http_requests_in_flight",
            "HTTP requests being answered right now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        #: Requests being answered. In one process it is read at scrape time, so counting
        #: them takes no lock on the hot path; workers share the gauge's file instead.
        self.requests_in_flight = 0
        if not self.shared:
            self.in_flight.set_function(lambda: self.requests_in_flight)
        self.store_up = Gauge(
            "features_gql_store_up",
            "1 if the last readiness probe of the store succeeded, else 0.",
            registry=self.registry,
            # Any worker whose store does not answer makes the service not up.
            multiprocess_mode="livemin",
        )
        self.connections_open = Gauge(
            "features_gql_connections_open",
            "Client connections open now (the standalone service only).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.connections_unproven = Gauge(
            "features_gql_connections_unproven",
            "Client connections that have not proven themselves yet: still sending their "
            "request's headers, or WebSockets awaiting connection_init (the standalone "
            "service only).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.connections_dropped = Counter(
            "features_gql_connections_dropped",
            "Client connections closed or not accepted by the connection limits, by reason: "
            "header_timeout, body_timeout, init_timeout (no WebSocket connection_init), "
            "evicted (room made for a new one), refused (all busy), "
            "unproven_address and unproven_global (over the unproven connections' budgets), "
            "body_budget (over a principal's bodies still arriving), "
            "accept_failed (out of file descriptors).",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "features_gql_rate_limited",
            "Requests refused for going over a client's rate limit, by limit: token "
            "(requests per token), address (requests per client address), parse (bytes of "
            "new query text per client).",
            ["limit"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "features_gql_http_requests",
            "HTTP requests that are not GraphQL operations or OFREP evaluations (those have "
            "their own histograms): probes, files, metrics, admin routes, and requests "
            "refused before any entrance answered them; by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self._sink_collector = None if sink_health is None else _SinkHealthCollector(sink_health)
        if self._sink_collector is not None:
            self.registry.register(self._sink_collector)
        self._names: set[str] = set()
        self._store_children: dict[tuple[str, str, str, bool], Observer] = {}
        self._request_children: dict[tuple[str | None, str], Observer] = {}
        self._ofrep_children: dict[tuple[str, str], Observer] = {}
        self._names_lock = threading.Lock()
        self.subscription_events: Counter | None = None
        self._process_collectors: list[Collector] = []

    def _histogram(
        self, name: str, documentation: str, labelnames: list[str], buckets: Sequence[float]
    ) -> LabelledHistogram:
        if self.shared:
            return Histogram(
                name, documentation, labelnames, buckets=buckets, registry=self.registry
            )
        histogram = ProcessHistogram(name, documentation, labelnames, buckets)
        self.registry.register(histogram)
        return histogram

    # -- snapshots and feed -------------------------------------------------------------

    def track_feed(self, feed: ChangeFeed) -> None:
        """Subscription metrics, read from the change feed at scrape time."""
        self._own(_FeedCollector(feed))
        self.subscription_events = Counter(
            "features_gql_subscription_events",
            "Change events sent to subscribers.",
            registry=self.registry,
        )

    def track_followers(self, followers: Callable[[], Mapping[str, FollowerStatus]]) -> None:
        """The status of every copy's follower, read at scrape time."""
        self._own(_FollowersCollector(followers))

    def track_edge(self, edge: EdgeSync) -> None:
        """An edge's sync metrics, read from its follower at scrape time."""
        self._own(_EdgeCollector(edge))

    def _own(self, collector: Collector) -> None:
        """A collector of this process's own state, in every exposition of it."""
        self.registry.register(collector)
        self._process_collectors.append(collector)

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
        self,
        operation: str | None,
        outcome: str,
        seconds: float,
        codes: Iterable[str],
        protocol: str = "graphql",
    ) -> None:
        if protocol == "ofrep":
            self.observe_ofrep(operation or "evaluate", outcome, seconds, codes)
            return
        key = (operation, outcome)
        child = self._request_children.get(key)
        if child is None:
            child = self.request_seconds.labels(self.operation_label(operation), outcome)
            if len(self._request_children) < 4 * MAX_OPERATION_NAMES:
                self._request_children[key] = child
        child.observe(seconds)
        for code in codes:
            self.errors.labels(code).inc()

    def observe_http(self, route: str, status: int) -> None:
        """A request answered without an operation; ``route`` is a route's pattern (one
        of the application's, so a bounded set) or ``unmatched``."""
        self.http_requests.labels(route, str(status)).inc()

    def request_started(self) -> None:
        self.requests_in_flight += 1
        if self.shared:
            self.in_flight.inc()

    def request_finished(self) -> None:
        self.requests_in_flight -= 1
        if self.shared:
            self.in_flight.dec()

    def observe_ofrep(
        self, endpoint: str, outcome: str, seconds: float, codes: Iterable[str]
    ) -> None:
        """An OFREP evaluation; ``endpoint`` is one of a fixed few, set by the server."""
        key = (endpoint, outcome)
        child = self._ofrep_children.get(key)
        if child is None:
            child = self.ofrep_seconds.labels(endpoint, outcome)
            self._ofrep_children[key] = child
        child.observe(seconds)
        for code in codes:
            self.ofrep_errors.labels(code).inc()

    def exposition(self) -> bytes:
        if not self.shared:
            return generate_latest(self.registry)
        # Every worker's files, added up; the sink counters are this worker's own.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if self._sink_collector is not None:
            registry.register(self._sink_collector)
        for collector in self._process_collectors:
            registry.register(collector)
        return generate_latest(registry)
