"""The per-request context: the API, the caller, the request id and the request's batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from strawberry.dataloader import DataLoader

from features_gql.api import CheckBatch, FeaturesAPI
from features_gql.auth import AuthPolicy, Principal
from features_gql.domain import FeatureInfo, Resource

if TYPE_CHECKING:
    from features_gql.edge import EdgeSync
    from features_gql.feed import ChangeFeed
    from features_gql.graphql.admission import Admitted


# Slots: one is built for every request.
@dataclass(slots=True)
class Context:
    api: FeaturesAPI
    request_id: str
    #: Who is asking; its name is the actor recorded for its changes.
    principal: Principal = field(default_factory=lambda: AuthPolicy.open().anonymous_principal)
    #: What the gate decided for this request, when it went through one.
    admitted: Admitted | None = None
    #: The process's change feed, for subscriptions (None where none is served).
    feed: ChangeFeed | None = None
    #: The follower of the upstream, when this service is an edge (for syncStatus).
    sync: EdgeSync | None = None
    #: Set once the query is parsed; for request logs and metrics.
    operation_name: str | None = field(default=None, init=False)
    checks: CheckBatch = field(init=False)
    _features: DataLoader[Resource, list[str]] | None = field(default=None, init=False)
    _feature_infos: DataLoader[str, FeatureInfo] | None = field(default=None, init=False)

    @property
    def actor(self) -> str:
        return self.principal.name

    @property
    def features(self) -> DataLoader[Resource, list[str]]:
        # Built when first asked for: most requests are flag checks that never need it.
        if self._features is None:
            self._features = DataLoader(load_fn=self.api.features_of_many)
        return self._features

    @property
    def feature_infos(self) -> DataLoader[str, FeatureInfo]:
        """Every catalog field of a request (Feature.defined, resourceCount...) in one call."""
        if self._feature_infos is None:
            self._feature_infos = DataLoader(load_fn=self.api.feature_infos)
        return self._feature_infos

    def __post_init__(self) -> None:
        # Built per request, so answers are never shared between requests, and all
        # `features` / `hasFeature` fields of one request reach the store in one call.
        self.checks = CheckBatch(self.api)
