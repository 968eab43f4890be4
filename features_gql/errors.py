"""Domain errors. Driving adapters translate them at the edge (GraphQL codes, CLI messages)."""

from __future__ import annotations


class FeaturesError(Exception):
    """Base of every error features-gql raises on purpose."""

    code = "FEATURES_ERROR"


class InvalidInput(FeaturesError):
    """A name, id, cursor or limit broke a documented rule."""

    code = "BAD_USER_INPUT"

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message

    def at(self, prefix: str) -> InvalidInput:
        """The same error with its field placed under ``prefix`` (``items[3].feature``)."""
        return InvalidInput(f"{prefix}.{self.field}", self.rule, self.message)


class StoreError(FeaturesError):
    """A store could not answer. ``injected`` marks faults raised on purpose by a drill."""

    code = "STORE_UNAVAILABLE"
    outcome = "unavailable"

    def __init__(self, message: str, *, injected: bool = False) -> None:
        super().__init__(message)
        self.injected = injected


class StoreUnavailable(StoreError):
    """The store is down, unreachable or refused the operation."""


class StoreTimeout(StoreError):
    """The store did not answer within the deadline.

    ``maybe_applied`` is set for a write: the store may have applied it after the
    deadline passed. Writes are idempotent, so retrying one is always safe.
    """

    code = "STORE_TIMEOUT"
    outcome = "timeout"

    def __init__(
        self, message: str, *, injected: bool = False, maybe_applied: bool = False
    ) -> None:
        super().__init__(message, injected=injected)
        self.maybe_applied = maybe_applied


class StoreConflict(StoreError):
    """The store refused a write that conflicted with another one in flight."""

    code = "STORE_CONFLICT"
    outcome = "conflict"


class StoreUnsupported(StoreError):
    """The store does not implement this operation (an optional part of the protocol)."""

    code = "NOT_SUPPORTED"
    outcome = "unsupported"


class ConfigError(FeaturesError):
    """The configuration (CLI, TOML, environment) asks for something impossible."""

    code = "CONFIG_ERROR"


class PluginError(ConfigError):
    """A plugin is unknown, broken or registered something invalid."""

    code = "PLUGIN_ERROR"
