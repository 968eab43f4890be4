"""The per-request context: the API, the caller, the request id and the request's batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from strawberry.dataloader import DataLoader

from features_gql.api import CheckBatch, FeaturesAPI
from features_gql.auth import AuthPolicy, Principal
from features_gql.domain import FeatureInfo, Resource

if TYPE_CHECKING:
    from features_gql.edge import EdgeSync
    from features_gql.feed import ChangeFeed
    from features_gql.graphql.admission import Admitted


# Slots and a written __init__: one is built for every request.
@dataclass(slots=True, init=False)
class Context:
    api: FeaturesAPI
    request_id: str
    #: Who is asking; its name is the actor recorded for its changes.
    principal: Principal
    #: What the gate decided for this request, when it went through one.
    admitted: Admitted | None
    #: The process's change feed, for subscriptions (None where none is served).
    feed: ChangeFeed | None
    #: The follower of the upstream, when this service is an edge (for syncStatus).
    sync: EdgeSync | None
    #: Set once the query is parsed; for request logs and metrics.
    operation_name: str | None
    #: The request's flag checks: built per request, so answers are never shared between
    #: requests, and all `features` / `hasFeature` fields of one request reach the store
    #: in one call.
    checks: CheckBatch
    _features: DataLoader[Resource, list[str]] | None
    _feature_infos: DataLoader[str, FeatureInfo] | None

    def __init__(
        self,
        api: FeaturesAPI,
        request_id: str,
        principal: Principal | None = None,
        admitted: Admitted | None = None,
        feed: ChangeFeed | None = None,
        sync: EdgeSync | None = None,
    ) -> None:
        self.api = api
        self.request_id = request_id
        self.principal = AuthPolicy.open().anonymous_principal if principal is None else principal
        self.admitted = admitted
        self.feed = feed
        self.sync = sync
        self.operation_name = None
        self.checks = CheckBatch(api)
        self._features = None
        self._feature_infos = None

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
