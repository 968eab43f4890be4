"""Domain errors. Driving adapters translate them at the edge (GraphQL codes, CLI messages)."""

from __future__ import annotations

#: The longest part of a message built from what a peer sent (a field, a reason).
MESSAGE_PART_MAX = 200


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


class ChangesTrimmed(StoreError):
    """The change log no longer holds the changes asked for: it was trimmed by retention.

    Not a failure to retry: the reader must load a snapshot and follow the changes after
    its revision. ``first_retained`` is the oldest revision the log still holds.
    """

    code = "RESYNC_REQUIRED"
    outcome = "trimmed"

    def __init__(self, after: int, first_retained: int) -> None:
        super().__init__(
            f"the change log no longer holds the changes after revision {after} (it keeps "
            f"revisions from {first_retained}): load a snapshot and follow the changes "
            "after its revision"
        )
        self.after = after
        self.first_retained = first_retained


class SnapshotsUnsupported(StoreError):
    """The store implements no snapshots (a third-party store written before them):
    replicas load by replaying the change log instead."""

    code = "SNAPSHOTS_UNSUPPORTED"
    outcome = "unsupported"


class UpstreamUnavailable(StoreError):
    """An edge could not reach its upstream, or the upstream could not answer in time.

    Nothing was applied at the edge. ``maybe_applied`` is set for a write whose request
    reached the upstream but whose answer did not come back: writes are idempotent, so
    retrying it is safe. ``resume_at_once`` marks an end the follower need not back off
    from (the upstream dropped it as a slow subscriber).
    """

    code = "UPSTREAM_UNAVAILABLE"

    def __init__(
        self, message: str, *, maybe_applied: bool = False, resume_at_once: bool = False
    ) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
        self.resume_at_once = resume_at_once


class MalformedUpstream(StoreError):
    """The upstream answered something an edge cannot take for what it claims to be: an
    unknown op, a field missing or of the wrong type, a revision out of range or out of
    order, paging that makes no progress. Nothing of it was applied; the edge keeps serving
    its copy and tries again later. The message names the field and the rule, bounded in
    length (never the upstream's whole answer)."""

    code = "UPSTREAM_MALFORMED"
    outcome = "malformed"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field[:MESSAGE_PART_MAX]
        self.reason = reason[:MESSAGE_PART_MAX]
        super().__init__(f"the upstream sent a bad {self.field}: {self.reason}")


class UpstreamRefused(FeaturesError):
    """The upstream answered a forwarded request with an error of its own (a token it
    does not know, a scope the token lacks): passed on to the caller with its code."""

    def __init__(self, code: str, message: str, extensions: dict[str, object]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = {k: v for k, v in extensions.items() if k not in ("code", "requestId")}


class ConfigError(FeaturesError):
    """The configuration (CLI, TOML, environment) asks for something impossible."""

    code = "CONFIG_ERROR"


class StartupError(FeaturesError):
    """The service cannot start: its port is taken, or its store cannot be opened."""

    code = "STARTUP_ERROR"


class PluginError(ConfigError):
    """A plugin is unknown, broken or registered something invalid."""

    code = "PLUGIN_ERROR"
