"""Typed access to one store's options, which rejects options nobody read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from features_gql.errors import ConfigError


class StoreOptions:
    """The options of one ``[store]`` table, read by a store factory.

    Each getter checks the type and records the key as known; after the factory
    returns, :meth:`check_all_used` turns a misspelt option into a clear error
    instead of a silently ignored setting.
    """

    def __init__(self, plugin: str, values: Mapping[str, Any], where: str = "store") -> None:
        self.plugin = plugin
        self.where = where
        self._values = dict(values)
        self._known: set[str] = set()

    def _get(self, key: str, kinds: tuple[type, ...], default: Any, what: str) -> Any:
        self._known.add(key)
        if key not in self._values:
            return default
        value = self._values[key]
        # bool is an int in Python; a number option must not silently accept `true`.
        if isinstance(value, bool) and bool not in kinds:
            value = None
        if not isinstance(value, kinds):
            raise ConfigError(
                f"{self.where}: option {key!r} of store {self.plugin!r} must be {what}, "
                f"got {self._values[key]!r}"
            )
        return value

    def get_str(self, key: str, default: str | None = None) -> str | None:
        value: str | None = self._get(key, (str,), default, "a string")
        return value

    def required_str(self, key: str) -> str:
        value = self.get_str(key)
        if value is None:
            raise ConfigError(f"{self.where}: store {self.plugin!r} needs option {key!r}")
        return value

    def get_float(self, key: str, default: float, *, minimum: float | None = None) -> float:
        value = float(self._get(key, (int, float), default, "a number"))
        if minimum is not None and value < minimum:
            raise ConfigError(
                f"{self.where}: option {key!r} of store {self.plugin!r} must be >= {minimum}, "
                f"got {value}"
            )
        return value

    def get_int(self, key: str, default: int, *, minimum: int | None = None) -> int:
        value: int = self._get(key, (int,), default, "an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(
                f"{self.where}: option {key!r} of store {self.plugin!r} must be >= {minimum}, "
                f"got {value}"
            )
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value: bool = self._get(key, (bool,), default, "true or false")
        return value

    def get_str_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self._get(key, (list,), default if default is not None else [], "a list")
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(
                f"{self.where}: option {key!r} of store {self.plugin!r} must be a list of strings"
            )
        return list(value)

    def get_table(self, key: str) -> Mapping[str, Any] | None:
        value: Mapping[str, Any] | None = self._get(key, (dict,), None, "a table")
        return value

    def raw(self, key: str) -> Any:
        """The value as written, of whatever type (a wrapper's ``inner`` table or URL)."""
        self._known.add(key)
        return self._values.get(key)

    def check_all_used(self) -> None:
        unknown = sorted(set(self._values) - self._known - {"plugin"})
        if unknown:
            known = ", ".join(sorted(self._known)) or "none"
            raise ConfigError(
                f"{self.where}: unknown option(s) {', '.join(map(repr, unknown))} for store "
                f"{self.plugin!r}; it takes: {known}"
            )
