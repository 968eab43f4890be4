"""What the hot path keeps between requests, and what it reads without waiting, must never
change an answer: an admission decision is never another caller's or another method's,
a body that arrives in pieces is read whole, and the one-process histogram counts exactly
as prometheus-client's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.samples import Sample

from features_gql.metrics import STORE_BUCKETS, ProcessHistogram
from tests.conftest import StartServer, bearer, make_tokens

HAS = "query Check($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"
ADD = (
    "mutation Add($r: ResourceInput!, $f: String!) { addFeature(resource: $r, feature: $f) "
    "{ ... on FeatureChange { changed } } }"
)
VARIABLES = {"r": {"type": "pipeline", "id": "p1"}, "f": "speedups"}


async def test_an_admission_decision_is_never_reused_for_another_caller(
    start_server: StartServer,
) -> None:
    tables, secrets = make_tokens(writer="read,write", reader="read", blind="write")
    server = await start_server("memory", auth_tokens=tables)

    async def codes(who: str, query: str) -> list[str]:
        response = await server.gql(query, VARIABLES, headers=bearer(secrets[who]))
        assert response.status == 200
        return response.codes

    # Each text is first admitted for a caller who may run it, then asked by one who may
    # not: a decision kept for the first must not answer the second.
    assert await codes("writer", ADD) == []
    assert await codes("reader", ADD) == ["FORBIDDEN"]
    assert await codes("reader", HAS) == []
    assert await codes("blind", HAS) == ["FORBIDDEN"]
    assert await codes("writer", HAS) == []
    assert await codes("blind", ADD) == []
    assert await codes("reader", ADD) == ["FORBIDDEN"]
    anonymous = await server.gql(HAS, VARIABLES)
    assert anonymous.status == 401


async def test_a_get_never_reuses_a_posts_admission(start_server: StartServer) -> None:
    server = await start_server("memory")
    assert (await server.gql(ADD, VARIABLES)).codes == []
    params = {"query": ADD, "variables": json.dumps(VARIABLES)}
    async with server.session.get(f"{server.url}/graphql", params=params) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    assert await server.service.api.revision() == 1, "the GET changed nothing"


async def test_a_body_that_arrives_in_pieces_is_read_whole(start_server: StartServer) -> None:
    server = await start_server("memory")
    await server.gql(ADD, VARIABLES)
    payload = json.dumps({"query": HAS, "variables": VARIABLES}).encode()

    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 16):
            yield payload[start : start + 16]
            await asyncio.sleep(0.01)

    async with server.session.post(
        f"{server.url}/graphql", data=slowly(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 200
        assert await response.json() == {"data": {"hasFeature": True}}


async def test_a_body_over_the_limit_is_refused_whether_or_not_it_has_all_arrived(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    big = b'{"query": "' + b" " * (5 * 1024 * 1024) + b'{ __typename }"}'

    async def in_pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]
            await asyncio.sleep(0.01)

    headers = {"Content-Type": "application/json"}
    for data in (big, in_pieces()):
        async with server.session.post(
            f"{server.url}/graphql", data=data, headers=headers
        ) as response:
            assert response.status == 413
            body: dict[str, Any] = await response.json()
            assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def _samples(collected: Any) -> list[tuple[str, list[tuple[str, str]], float]]:
    found: list[Sample] = [s for family in collected for s in family.samples]
    return sorted(
        (s.name, sorted(s.labels.items()), s.value)
        for s in found
        if not s.name.endswith("_created")
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(STORE_BUCKETS),  # exactly on a bound: counted in that bucket
            st.floats(min_value=0, max_value=10, allow_nan=False),
        ),
        max_size=30,
    )
)
def test_the_process_histogram_counts_as_prometheus_client_does(amounts: list[float]) -> None:
    ours = ProcessHistogram("h_seconds", "doc", ["op"], STORE_BUCKETS)
    theirs = Histogram(
        "h_seconds", "doc", ["op"], buckets=STORE_BUCKETS, registry=CollectorRegistry()
    )
    for amount in amounts:
        ours.labels("has").observe(amount)
        theirs.labels("has").observe(amount)
    mine, reference = _samples(ours.collect()), _samples(theirs.collect())
    assert [(name, labels) for name, labels, _ in mine] == [
        (name, labels) for name, labels, _ in reference
    ]
    for (_, _, a), (_, _, b) in zip(mine, reference, strict=True):
        assert abs(a - b) <= 1e-9 * max(1.0, abs(b))
