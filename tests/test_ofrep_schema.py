"""Schema-driven: the OFREP endpoints answer what docs/ofrep-openapi.yaml says, for
requests generated from it, valid and invalid (schemathesis runs its checks on each:
no server error, documented statuses, content types, headers and bodies)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.service_thread import ServiceThread, service_thread

DESCRIPTION = Path(__file__).resolve().parent.parent / "docs" / "ofrep-openapi.yaml"
ADD = """mutation ($r: ResourceInput!, $f: String!) {
  addFeature(resource: $r, feature: $f) { __typename }
}"""

schema = schemathesis.openapi.from_path(DESCRIPTION)


DEFINE = """mutation ($name: String!) {
  defineFeature(input: {name: $name}) { __typename }
}"""


@pytest.fixture(scope="module", params=[False, True], ids=["lenient", "strict catalog"])
def ofrep_service(request: pytest.FixtureRequest) -> Iterator[ServiceThread]:
    # A default resource type, as the description allows a context without resourceType.
    with service_thread(
        openfeature_default_resource_type="pipeline", catalog_strict=request.param
    ) as service:
        # Defined features, one of them assigned: strict mode answers 404 for the others,
        # and bulk answers list them all.
        for name in ("0", "speedups"):
            service.gql(DEFINE, {"name": name}, {})
        for id_ in ("0", "a", "db8e9a0d"):
            service.gql(ADD, {"r": {"type": "pipeline", "id": id_}, "f": "0"}, {})
        yield service


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_ofrep_endpoints_follow_their_description(
    case: schemathesis.Case, ofrep_service: ServiceThread
) -> None:
    case.call_and_validate(base_url=ofrep_service.url)
