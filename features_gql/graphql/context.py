"""The per-request context: the API, the request id, and the request's DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field

from strawberry.dataloader import DataLoader

from features_gql.api import FeaturesAPI
from features_gql.domain import Resource


@dataclass
class Context:
    api: FeaturesAPI
    request_id: str
    #: Who is making changes, as the client says (``X-Actor``); recorded in the change log.
    actor: str | None = None
    #: Set once the query is parsed; for request logs and metrics.
    operation_name: str | None = field(default=None, init=False)
    features: DataLoader[Resource, list[str]] = field(init=False)
    checks: DataLoader[tuple[Resource, str], bool] = field(init=False)

    def __post_init__(self) -> None:
        # Built per request, so answers are never shared between requests, and all
        # `features` / `hasFeature` fields of one request reach the store in one call.
        self.features = DataLoader(load_fn=self.api.features_of_many)
        self.checks = DataLoader(load_fn=self.api.check_many)
