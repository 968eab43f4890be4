"""The one place that wires plugins, store, loggers and the API together."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from features_gql.api import FeaturesAPI
from features_gql.auth import AuthPolicy
from features_gql.config import Settings, policy
from features_gql.errors import ConfigError
from features_gql.events import (
    EventDispatcher,
    OperationEvent,
    OperationSink,
    collect_for_request,
)
from features_gql.loggers import Logger, LogSettings
from features_gql.metrics import Metrics
from features_gql.plugin_manager import Plugins, collect, create_plugin_manager
from features_gql.stores.base import Store
from features_gql.stores.registry import StoreBuilder

log = logging.getLogger("features_gql.bootstrap")

#: Used when no store is configured: a SQLite file under the user's data directory.
DEFAULT_STORE = {"plugin": "sqlite"}


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

    async def start(self) -> None:
        self.dispatcher.start()
        await self.store.open()

    async def stop(self) -> None:
        try:
            await self.store.close()
        finally:
            self.dispatcher.stop()
            for logger in self.loggers:
                logger.close()


def store_table(settings: Settings, plugins: Plugins) -> dict[str, Any]:
    if settings.store is None:
        return dict(DEFAULT_STORE)
    if isinstance(settings.store, str):
        return plugins.stores.table_for_spec(settings.store)
    return dict(settings.store)


def _gate(loggers: list[Logger], *, has_hooks: bool) -> Callable[[OperationEvent], bool] | None:
    """Whether any background sink wants an event, when every sink can tell; else None.

    Plugins' operation-event hooks always want every event. With no sink at all, nothing
    is ever queued.
    """
    if has_hooks:
        return None
    accepts = [getattr(logger, "accepts", None) for logger in loggers]
    if not all(callable(accept) for accept in accepts):
        return None
    checks = [cast(Callable[[OperationEvent], bool], accept) for accept in accepts]
    if len(checks) == 1:
        return checks[0]
    return lambda event: any(check(event) for check in checks)


def build(settings: Settings, *, extra_plugins: Sequence[object] = ()) -> Service:
    """Load plugins, build the configured store and loggers, and the API over them."""
    plugins = collect(create_plugin_manager(settings.plugins_dir, extra_plugins))
    log_settings = LogSettings(format=settings.log_format, level=settings.log_level)
    loggers = [plugins.loggers.get(name).factory(log_settings) for name in settings.loggers]
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
        inline=[("metrics", metrics.observe_operation), ("request", collect_for_request)],
        gate=_gate(loggers, has_hooks=bool(plugins.operation_sinks)),
    )
    if settings.catalog_strict and not store.supports_catalog:
        raise ConfigError(
            f"[catalog] strict = true needs a store with a catalog; {store.name} has none"
        )
    api = FeaturesAPI(
        store, deadline=settings.deadline, on_event=dispatcher.emit, strict=settings.catalog_strict
    )
    description = store.describe()
    return Service(
        settings, plugins, store, api, dispatcher, metrics, loggers, description, policy(settings)
    )
