"""The one place that wires plugins, store, loggers and the API together."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features_gql.api import FeaturesAPI
from features_gql.auth import AuthPolicy
from features_gql.catalog_view import CatalogFollower, CatalogView
from features_gql.config import DEFAULT_STORE, Settings, data_directory, policy
from features_gql.edge import EdgeStore, EdgeSync
from features_gql.errors import ConfigError, PluginError
from features_gql.events import (
    EventDispatcher,
    OperationEvent,
    OperationSink,
)
from features_gql.feed import ChangeFeed
from features_gql.flag_evaluation import NO_CATALOG, FlagCatalog
from features_gql.loggers import Logger, LogSettings
from features_gql.metrics import Metrics
from features_gql.plugin_manager import Plugins, collect, create_plugin_manager
from features_gql.replication.follower import FollowerStatus
from features_gql.retention import Retention
from features_gql.stores.base import Store
from features_gql.stores.registry import StoreBuilder
from features_gql.upstream import UpstreamClient

log = logging.getLogger("features_gql.bootstrap")


@dataclass
class Service:
    """Everything a running features-gql needs; entry points build one with :func:`build`."""

    settings: Settings
    plugins: Plugins
    store: Store
    api: FeaturesAPI
    dispatcher: EventDispatcher
    metrics: Metrics
    loggers: list[Logger] = field(default_factory=list)
    store_description: str = ""
    #: Who may do what, for every way in.
    auth: AuthPolicy = field(default_factory=AuthPolicy.open)
    # -- snapshots and feed --
    #: The live change feed of this process (GraphQL subscriptions).
    feed: ChangeFeed | None = None
    #: Trims the change log, when ``retain_changes`` is set.
    retention: Retention | None = None
    #: Keeps the copy in step with the upstream, when this service is an edge.
    edge: EdgeSync | None = None
    #: Which features exist, for flag evaluation (OFREP): an in-memory view of the
    #: catalog, or NO_CATALOG over a store without one.
    catalog: FlagCatalog = NO_CATALOG
    #: Loads the view and keeps it current (:meth:`start_catalog`); None at an edge, whose
    #: follower of the upstream feeds the view.
    catalog_follower: CatalogFollower | None = None

    def followers(self) -> dict[str, FollowerStatus]:
        """The status of every copy this service keeps current, by name: what
        ``/readyz`` and the metrics report of them."""
        found: dict[str, FollowerStatus] = {}
        if self.edge is not None:
            found["edge"] = self.edge.follower.status
        if self.catalog_follower is not None:
            found["catalog"] = self.catalog_follower.follower.status
        if self.feed is not None and self.feed.head is not None:
            found["feed"] = self.feed.status  # only while it follows: while anyone subscribes
        return found

    async def start(self) -> None:
        self.dispatcher.start()
        try:
            await self.store.open()
        except BaseException:
            self.dispatcher.stop()
            raise
        if await self.api.watch_store():
            log.info("the store pushes its changes: followers of the change log wake at once")
        if self.retention is not None:
            self.retention.start()
        if self.edge is not None:
            self.edge.start()

    async def start_catalog(self, within: float) -> None:
        """Start loading the catalog's view for serving (after :meth:`start`), waiting at
        most ``within`` seconds for it; a store that cannot answer by then leaves it
        loading in the background."""
        if self.catalog_follower is not None:
            await self.catalog_follower.start(within=within)

    async def stop(self) -> None:
        try:
            if self.catalog_follower is not None:
                await self.catalog_follower.stop()
            if self.edge is not None:
                await self.edge.stop()
            if self.feed is not None:
                await self.feed.stop()
            if self.retention is not None:
                await self.retention.stop()
            await self.store.close()
        finally:
            self.dispatcher.stop()
            for logger in self.loggers:
                logger.close()


def store_table(settings: Settings, plugins: Plugins) -> dict[str, Any]:
    if settings.store is None and settings.upstream is not None:
        # An edge keeps its copy apart from a service's default file on the same machine.
        return {"plugin": "sqlite", "path": str(data_directory() / "edge.db")}
    if settings.store is None:
        return dict(DEFAULT_STORE)
    if isinstance(settings.store, str):
        return plugins.stores.table_for_spec(settings.store)
    return dict(settings.store)


def _gate(loggers: list[Logger], *, has_hooks: bool) -> Callable[[OperationEvent], bool] | None:
    """Whether any background sink wants an event; None when every event is wanted.

    Plugins' operation-event hooks always want every event. With no sink at all, nothing
    is ever queued.
    """
    if has_hooks:
        return None
    checks = [logger.accepts for logger in loggers]
    if len(checks) == 1:
        return checks[0]
    return lambda event: any(check(event) for check in checks)


def _logger(plugins: Plugins, name: str, settings: LogSettings) -> Logger:
    entry = plugins.loggers.get(name)
    logger = entry.factory(settings)
    if not isinstance(logger, Logger):
        raise PluginError(
            f"logger plugin {name!r} (from {entry.provided_by!r}) returned "
            f"{type(logger).__name__}, which lacks the methods of features_gql.loggers.Logger "
            "(accepts, operation, close)"
        )
    return logger


def build(settings: Settings, *, extra_plugins: Sequence[object] = ()) -> Service:
    """Load plugins, build the configured store and loggers, and the API over them."""
    plugins = collect(create_plugin_manager(settings.plugins_dir, extra_plugins))
    log_settings = LogSettings(format=settings.log_format, level=settings.log_level)
    loggers = [_logger(plugins, name, log_settings) for name in settings.loggers]
    table = store_table(settings, plugins)
    store = StoreBuilder(plugins.stores).build(table)
    sinks: list[tuple[str, OperationSink]] = [
        (name, logger.operation) for name, logger in zip(settings.loggers, loggers, strict=True)
    ]
    sinks += plugins.operation_sinks
    # The lambda reads the dispatcher at scrape time; it is created just below.
    metrics = Metrics(sink_health=lambda: dispatcher.health)
    dispatcher = EventDispatcher(
        sinks,
        inline=[("metrics", metrics.observe_operation)],
        gate=_gate(loggers, has_hooks=bool(plugins.operation_sinks)),
    )
    if settings.catalog_strict and not store.supports_catalog:
        raise ConfigError(
            f"[catalog] strict = true needs a store with a catalog; {store.name} has none"
        )
    edge: EdgeSync | None = None
    if settings.upstream is not None:
        # The copy is written only by the follower, through an API of its own over the
        # local store (instrumented, and waking this service's change feed); the service's
        # API reads the copy and forwards writes upstream.
        local = FeaturesAPI(store, deadline=settings.deadline, on_event=dispatcher.emit)
        client = UpstreamClient(settings.upstream, settings.upstream_token)
        edge = EdgeSync(local, client, state_file=_state_file(settings, store))
        store = EdgeStore(store, client, edge)
    api = FeaturesAPI(
        store, deadline=settings.deadline, on_event=dispatcher.emit, strict=settings.catalog_strict
    )
    if edge is not None:
        edge.local.change_listeners = api.change_listeners
        metrics.track_edge(edge)
    description = store.describe()
    service = Service(
        settings, plugins, store, api, dispatcher, metrics, loggers, description, policy(settings)
    )
    service.edge = edge
    if edge is not None:
        # The copy holds no definitions: the view is the upstream's catalog, which the
        # edge's follower loads and keeps current.
        edge.catalog = CatalogView(strict=settings.catalog_strict)
        service.catalog = edge.catalog
    elif store.supports_catalog:
        service.catalog_follower = CatalogFollower(api)
        service.catalog = service.catalog_follower.view
    service.feed = ChangeFeed(api)
    metrics.track_feed(service.feed)
    metrics.track_followers(service.followers)
    if settings.retain_changes is not None:
        service.retention = Retention(api, settings.retain_changes)
    return service


def _state_file(settings: Settings, store: Store) -> Path | None:
    """Where an edge keeps its sync position: beside a file store's data, else in the data
    directory; nowhere for a store that forgets everything at exit."""
    if settings.upstream_state is not None:
        return settings.upstream_state
    path = getattr(store, "path", None)
    if isinstance(path, str) and path != ":memory:":
        return Path(path + ".upstream.json")
    if not store.shared_between_processes:
        return None
    return data_directory() / "edge-sync.json"
