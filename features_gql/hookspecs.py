"""Every hook a features-gql plugin can implement.

A plugin is a module (or object) with functions decorated by
``features_gql.hookimpl`` whose names match the specs below. Bundled plugins in
``plugins/`` use exactly the same mechanism as third-party ones. Hooks are called
through pluggy, so ``@hookimpl(tryfirst=True)``, ``trylast`` and
``@hookimpl(wrapper=True)`` behave as pluggy documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from features_gql.events import OperationEvent
    from features_gql.loggers import LoggerRegistry
    from features_gql.stores.registry import StoreRegistry

PROJECT = "features_gql"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def features_gql_register_stores(registry: StoreRegistry) -> None:
    """Add store plugins with ``registry.add(name, factory, description=..., url_schemes=...)``.

    Every implementation is called; the registry rejects duplicate names.
    """


@hookspec
def features_gql_register_loggers(registry: LoggerRegistry) -> None:
    """Add logger plugins with ``registry.add(name, factory, description=...)``.

    Every implementation is called; the registry rejects duplicate names.
    """


@hookspec
def features_gql_operation_event(event: OperationEvent) -> None:
    """Receive every store operation event (store, op, duration, outcome, request id).

    Called on the sink thread, never on the request path; each plugin's implementation
    is called on its own, so one that raises or is slow affects no request and no
    other sink. A plugin that only wraps this hook (``@hookimpl(wrapper=True)``) wraps
    each of those calls. Results are ignored.
    """
