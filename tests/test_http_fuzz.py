"""Whatever a client sends, the answer is a clean 2xx/4xx JSON response, never a 500."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import StartServer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
fragments = st.sampled_from(
    [
        "{ hasFeature(resource: {type: $t, id: $i}, feature: $f) }",
        "query ($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }",
        "query ($items: [CheckInput!]!) { checks(items: $items) { enabled } }",
        "mutation ($r: ResourceInput!, $f: String!) { addFeature(resource: $r, feature: $f) "
        "{ __typename } }",
        '{ resource(type: "a", id: "b") { features } }',
        "{ feature(name: $n) { resources(first: $first, after: $after) { edges { cursor } } } }",
        "{ __schema { types { name } } }",
        "{",
        "",
    ]
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "query": fragments | st.text(max_size=40) | json_values,
        "variables": st.dictionaries(
            st.sampled_from(["r", "f", "items", "t", "i", "n", "first", "after"]), json_values
        )
        | json_values,
        "operationName": st.none() | st.text(max_size=5) | json_values,
    },
)


async def test_random_requests_never_get_a_500(start_server: StartServer) -> None:
    server = await start_server("memory")
    bodies: list[bytes] = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(payloads | json_values, st.booleans())
    def collect(payload: Any, raw: bool) -> None:
        text = json.dumps(payload)
        bodies.append(text.encode()[: len(text) // 2] if raw else text.encode())

    collect()
    for accept in ("application/json", "application/graphql-response+json"):
        for body in bodies:
            async with server.session.post(
                f"{server.url}/graphql",
                data=body,
                headers={"Content-Type": "application/json", "Accept": accept},
            ) as response:
                text = await response.text()
                assert response.status < 500, (body, text)
                assert "Traceback" not in text
                payload = json.loads(text)
                assert "data" in payload or payload.get("errors"), text
