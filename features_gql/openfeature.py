"""An in-process OpenFeature provider: flags answered from a :class:`LocalReplica`.

For applications that embed features-gql and use the OpenFeature Python SDK: each
evaluation is a set lookup in the application's memory, with no I/O, and the SDK's
events say what the replica sees::

    replica = LocalReplica(FeaturesAPI(store), interval=1.0)
    await replica.start()
    api.set_provider(FeaturesProvider(replica, default_resource_type="pipeline"))
    client = api.get_client()
    client.get_boolean_value("speedups", False, EvaluationContext(targeting_key=pipeline_id))

- ``PROVIDER_READY`` once the replica has loaded its copy (the SDK emits it when
  :meth:`FeaturesProvider.initialize` returns), and again when a replica that could not
  follow its store catches up;
- ``PROVIDER_STALE`` when the replica cannot follow its store: it keeps answering from
  its copy, which grows older (``LocalReplica.staleness`` says by how much);
- ``PROVIDER_CONFIGURATION_CHANGED`` with ``flags_changed``, the features whose
  assignments or definitions changed (a define or archive too), each time the replica
  applies changes.

Which flags exist is the replica's catalog (:attr:`LocalReplica.catalog`): over a strict
``FeaturesAPI`` (``[catalog] strict``), a flag that is not defined, or is archived, is
``FLAG_NOT_FOUND``; otherwise any feature name evaluates.

The provider emits from the replica's event loop; depending on its version the SDK runs
handlers on threads of its own or right there, so keep them short.

The mapping (``targetingKey`` is the resource id, ``resourceType`` the type, the value
whether the resource has the feature) is :mod:`features_gql.flag_evaluation`, shared
with the OFREP endpoints. Needs ``pip install "features-gql[openfeature]"``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import (
    FlagNotFoundError,
    InvalidContextError,
    ProviderNotReadyError,
    TargetingKeyMissingError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from features_gql.domain import ChangeEvent
from features_gql.flag_evaluation import (
    RESOURCE_TYPE,
    CatalogUnavailable,
    ContextError,
    FlagCatalog,
    FlagNotFound,
    check_flag_key,
    resource_named,
)
from features_gql.replica import LocalReplica

__all__ = ["FeaturesProvider"]

NAME = "features-gql"


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class FeaturesProvider(AbstractProvider):
    """Boolean flags from a :class:`LocalReplica` (see the module).

    The application starts and stops the replica; the provider only reads it and
    listens to it. ``ready_timeout`` bounds how long :meth:`initialize` waits for a
    replica that is still loading (it never waits on the replica's own event loop:
    start the replica first there). ``catalog`` says which flags exist; by default the
    replica's own.
    """

    def __init__(
        self,
        replica: LocalReplica,
        *,
        default_resource_type: str | None = None,
        catalog: FlagCatalog | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.replica = replica
        self.default_resource_type = default_resource_type
        self.catalog: FlagCatalog = replica.catalog if catalog is None else catalog
        self.ready_timeout = ready_timeout
        self._loaded = threading.Event()
        self._stale = False
        self._shut_down = False

    def get_metadata(self) -> Metadata:
        return Metadata(name=NAME)

    # -- life cycle ------------------------------------------------------------------

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self._follow not in self.replica.listeners:
            self.replica.listeners.append(self._follow)
        if self.replica.staleness is not None:
            return  # loaded already
        if _on_event_loop():
            raise ProviderNotReadyError(
                "the replica has not loaded yet: await replica.start() before setting the "
                "provider from its event loop"
            )
        if not self._loaded.wait(self.ready_timeout):
            raise ProviderNotReadyError(
                f"the replica did not load within {self.ready_timeout:g}s: is it started, "
                "and can it reach its store?"
            )
        if self._shut_down:
            raise ProviderNotReadyError("the provider was shut down before the replica loaded")

    def shutdown(self) -> None:
        self._shut_down = True
        self._loaded.set()  # an initialize still waiting gives up
        if self._follow in self.replica.listeners:
            self.replica.listeners.remove(self._follow)

    def _follow(self, changes: Sequence[ChangeEvent], error: Exception | None) -> None:
        """The replica's listener: its outcomes become the provider's events."""
        if error is not None:
            if not self._stale:
                self._stale = True
                self.emit_provider_stale(
                    ProviderEventDetails(
                        message=f"cannot follow the store, answering from the copy: {error}"
                    )
                )
            return
        self._loaded.set()
        if self._stale:
            self._stale = False
            self.emit_provider_ready(ProviderEventDetails(message="following the store again"))
        if changes:
            self.emit_provider_configuration_changed(
                ProviderEventDetails(
                    flags_changed=sorted({change.feature for change in changes}),
                    metadata={"revision": self.replica.revision},
                )
            )

    # -- evaluation ------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        try:
            check_flag_key(flag_key, self.catalog)
            if evaluation_context is None:
                resource = resource_named(None, None, self.default_resource_type)
            else:
                resource = resource_named(
                    evaluation_context.targeting_key,
                    evaluation_context.attributes.get(RESOURCE_TYPE),
                    self.default_resource_type,
                )
        except FlagNotFound as exc:
            raise FlagNotFoundError(exc.message) from None
        except CatalogUnavailable as exc:
            raise ProviderNotReadyError(exc.message) from None
        except ContextError as exc:
            if exc.code == "TARGETING_KEY_MISSING":
                raise TargetingKeyMissingError(exc.message) from None
            raise InvalidContextError(exc.message) from None
        if self.replica.has((resource.type, resource.id), flag_key):
            return FlagResolutionDetails(True, reason=Reason.TARGETING_MATCH, variant="on")
        return FlagResolutionDetails(False, reason=Reason.DEFAULT, variant="off")

    def _not_boolean(self, flag_key: str) -> TypeMismatchError:
        return TypeMismatchError(f"{flag_key!r} is a feature: evaluate it as a boolean")

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        raise self._not_boolean(flag_key)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        raise self._not_boolean(flag_key)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        raise self._not_boolean(flag_key)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        raise self._not_boolean(flag_key)
