"""The registry that store plugins add themselves to, and the builder that composes stores."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from features_gql.errors import ConfigError, PluginError
from features_gql.registry import Registered, Registry
from features_gql.stores.base import Store
from features_gql.stores.options import StoreOptions

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

#: Builds a store from its options; a wrapper calls ``builder.inner(options)`` for its inner store.
StoreFactory = Callable[[StoreOptions, "StoreBuilder"], Store]
#: A registered store plugin.
StorePlugin = Registered[StoreFactory]


class StoreRegistry(Registry[StoreFactory]):
    """Handed to ``features_gql_register_stores``; validates what plugins add."""

    def __init__(self, provider: Callable[[], str] | None = None) -> None:
        super().__init__("store", provider)
        self._schemes: dict[str, str] = {}

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
        for scheme in url_schemes:
            if not isinstance(scheme, str) or _SCHEME.fullmatch(scheme) is None:
                raise PluginError(f"store {name!r} registered an invalid URL scheme {scheme!r}")
            if scheme in self._schemes:
                raise PluginError(
                    f"URL scheme {scheme!r} is claimed by stores {self._schemes[scheme]!r} "
                    f"and {name!r}"
                )
        super().add(name, factory, description=description)
        for scheme in url_schemes:
            self._schemes[scheme] = name

    def url_schemes(self, name: str) -> tuple[str, ...]:
        """The URL schemes that select store ``name``."""
        return tuple(sorted(scheme for scheme, store in self._schemes.items() if store == name))

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
