"""The registry that store plugins add themselves to, and the builder that composes stores."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from features_gql.errors import ConfigError, PluginError
from features_gql.stores.base import Store
from features_gql.stores.options import StoreOptions

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

#: Builds a store from its options; a wrapper calls ``builder.inner(options)`` for its inner store.
StoreFactory = Callable[[StoreOptions, "StoreBuilder"], Store]


@dataclass(frozen=True)
class StorePlugin:
    name: str
    factory: StoreFactory
    description: str
    url_schemes: tuple[str, ...]
    provided_by: str


class StoreRegistry:
    """Handed to ``features_gql_register_stores``; validates what plugins add."""

    def __init__(self) -> None:
        self._stores: dict[str, StorePlugin] = {}
        self._schemes: dict[str, str] = {}
        #: Set by the plugin manager while it calls one plugin's hook.
        self.current_plugin = "?"

    def add(
        self,
        name: str,
        factory: StoreFactory,
        *,
        description: str,
        url_schemes: tuple[str, ...] = (),
    ) -> None:
        """Register a store called ``name`` (the ``plugin`` key of a ``[store]`` table).

        ``url_schemes`` lets ``--store scheme://...`` select this store; the factory
        then receives the whole string as the ``url`` option.
        """
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise PluginError(
                f"plugin {self.current_plugin!r} registered store name {name!r}: names are "
                "1-32 characters of a-z, 0-9, '-' and '_', starting with a letter"
            )
        if not callable(factory):
            raise PluginError(
                f"plugin {self.current_plugin!r} registered store {name!r} with a factory "
                f"that is not callable: {factory!r}"
            )
        if name in self._stores:
            raise PluginError(
                f"store {name!r} is registered twice: by {self._stores[name].provided_by!r} "
                f"and by {self.current_plugin!r}"
            )
        for scheme in url_schemes:
            if _SCHEME.fullmatch(scheme) is None:
                raise PluginError(f"store {name!r} registered an invalid URL scheme {scheme!r}")
            if scheme in self._schemes:
                raise PluginError(
                    f"URL scheme {scheme!r} is claimed by stores {self._schemes[scheme]!r} "
                    f"and {name!r}"
                )
        for scheme in url_schemes:
            self._schemes[scheme] = name
        self._stores[name] = StorePlugin(
            name, factory, description, tuple(url_schemes), self.current_plugin
        )

    def names(self) -> list[str]:
        return sorted(self._stores)

    def all(self) -> list[StorePlugin]:
        return [self._stores[name] for name in self.names()]

    def get(self, name: str) -> StorePlugin:
        try:
            return self._stores[name]
        except KeyError:
            raise ConfigError(
                f"unknown store plugin {name!r}; available: {', '.join(self.names()) or 'none'}"
            ) from None

    def table_for_spec(self, spec: str) -> dict[str, Any]:
        """Turn a ``--store`` string into a store table.

        ``memory`` names a plugin; ``sqlite:///var/lib/f.db`` or ``mongodb://...``
        selects the plugin that claimed the URL scheme and passes the string as ``url``.
        """
        spec = spec.strip()
        if "://" not in spec:
            self.get(spec)
            return {"plugin": spec}
        scheme = spec.split("://", 1)[0].lower()
        if scheme in self._schemes:
            return {"plugin": self._schemes[scheme], "url": spec}
        if "+" in scheme and scheme.split("+", 1)[0] in self._schemes:
            # mongodb+srv:// and similar variants belong to the base scheme's plugin.
            return {"plugin": self._schemes[scheme.split("+", 1)[0]], "url": spec}
        known = ", ".join(f"{s}://" for s in sorted(self._schemes)) or "none"
        raise ConfigError(
            f"no store plugin handles URLs like {scheme}://...; "
            f"URL schemes: {known}; store names: {', '.join(self.names())}"
        )


class StoreBuilder:
    """Builds a store from a table; wrapper stores use it to build the store they hold."""

    def __init__(self, registry: StoreRegistry) -> None:
        self.registry = registry

    def build(self, table: Mapping[str, Any], where: str = "store") -> Store:
        plugin = table.get("plugin")
        if not isinstance(plugin, str):
            raise ConfigError(
                f'{where}: needs plugin = "<name>"; available: {", ".join(self.registry.names())}'
            )
        entry = self.registry.get(plugin)
        options = StoreOptions(plugin, table, where)
        store = entry.factory(options, self)
        options.check_all_used()
        if not isinstance(store, Store):
            raise PluginError(
                f"store plugin {plugin!r} (from {entry.provided_by!r}) returned "
                f"{type(store).__name__}, which is not a features_gql.stores.Store"
            )
        return store

    def inner(self, options: StoreOptions, key: str = "inner") -> Store:
        """Build the store a wrapper holds, from its ``inner`` table (or a ``--store`` string)."""
        raw = options.raw(key)
        where = f"{options.where}.{key}"
        if isinstance(raw, str):
            return self.build(self.registry.table_for_spec(raw), where)
        if isinstance(raw, Mapping):
            return self.build(raw, where)
        raise ConfigError(
            f"{options.where}: store {options.plugin!r} wraps another store and needs "
            f'[{where}] with plugin = "<name>" (or {key} = "memory" / a store URL)'
        )
