"""The registry plugins add named factories to; stores and loggers each have one."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from features_gql.errors import ConfigError, PluginError

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Registered(Generic[F]):
    """One factory a plugin registered, under the name configuration selects it by."""

    name: str
    factory: F
    description: str
    #: The name of the plugin that registered it.
    provided_by: str


class Registry(Generic[F]):
    """Handed to a registration hook; validates what plugins add and says who added what.

    ``provider`` names the plugin whose hook is running (the plugin manager knows); a
    registry built by hand, in a test, attributes everything to ``"?"``.
    """

    def __init__(self, kind: str, provider: Callable[[], str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Registered[F]] = {}
        self._provider = provider or (lambda: "?")

    @property
    def current_plugin(self) -> str:
        return self._provider()

    def add(self, name: str, factory: F, *, description: str) -> None:
        """Register ``factory`` under ``name``, the name configuration selects it by."""
        plugin = self.current_plugin
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise PluginError(
                f"plugin {plugin!r} registered {self.kind} name {name!r}: names are "
                "1-32 characters of a-z, 0-9, '-' and '_', starting with a letter"
            )
        if not callable(factory):
            raise PluginError(
                f"plugin {plugin!r} registered {self.kind} {name!r} with a factory that is "
                f"not callable: {factory!r}"
            )
        if name in self._entries:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by "
                f"{self._entries[name].provided_by!r} and by {plugin!r}"
            )
        self._entries[name] = Registered(name, factory, description, plugin)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def all(self) -> list[Registered[F]]:
        return [self._entries[name] for name in self.names()]

    def get(self, name: str) -> Registered[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} plugin {name!r}; "
                f"available: {', '.join(self.names()) or 'none'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries
