"""OFREP over the real HTTP server: the protocol's shapes and statuses, the mapping onto
resources and features, tokens, limits, the store's failures, and the community's
OFREP provider driven through the OpenFeature SDK."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature import api as openfeature_api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from features_gql.config import load_settings
from features_gql.errors import ConfigError
from features_gql.http.ofrep import MAX_BODY
from tests.broken_stores import BrokenStoresPlugin
from tests.conftest import Server, StartServer, bearer, make_tokens
from tests.service_thread import service_thread
from tests.test_http_fuzz import json_values

ADD = """mutation ($r: ResourceInput!, $f: String!) {
  addFeature(resource: $r, feature: $f) { ... on FeatureChange { changed } }
}"""
REMOVE = ADD.replace("addFeature", "removeFeature")
PIPELINE = {"type": "pipeline", "id": "db8e9a0d"}
CONTEXT = {"targetingKey": "db8e9a0d", "resourceType": "pipeline"}


async def evaluate(
    server: Server,
    key: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps({"context": CONTEXT} if body is None else body)
    async with server.session.post(
        f"{server.url}/ofrep/v1/evaluate/flags/{key}", data=data, headers=headers or {}
    ) as response:
        return response.status, await response.json(content_type=None)


async def bulk(
    server: Server, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    data = json.dumps({"context": CONTEXT} if body is None else body)
    async with server.session.post(
        f"{server.url}/ofrep/v1/evaluate/flags", data=data, headers=headers or {}
    ) as response:
        payload = None if response.status == 304 else await response.json(content_type=None)
        return response.status, payload, response.headers


# -- evaluation and the mapping ---------------------------------------------------------


async def test_a_feature_the_resource_has_is_true_and_one_it_lacks_is_default(
    server: Server,
) -> None:
    await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    assert await evaluate(server, "speedups") == (
        200,
        {"key": "speedups", "value": True, "reason": "TARGETING_MATCH", "variant": "on"},
    )
    assert await evaluate(server, "beta") == (
        200,
        {"key": "beta", "value": False, "reason": "DEFAULT", "variant": "off"},
    )
    other_type = {"context": {**CONTEXT, "resourceType": "app"}}
    assert (await evaluate(server, "speedups", other_type))[1]["value"] is False
    # Attributes besides the two that name the resource are accepted and play no part.
    extra = {"context": {**CONTEXT, "email": "a@example.com", "plan": {"tier": 3}}}
    assert (await evaluate(server, "speedups", extra))[1]["value"] is True


async def test_the_default_resource_type_applies_only_when_the_context_has_none(
    start_server: StartServer,
) -> None:
    server = await start_server(openfeature_default_resource_type="pipeline")
    await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    status, body = await evaluate(server, "speedups", {"context": {"targetingKey": "db8e9a0d"}})
    assert (status, body["value"]) == (200, True)
    status, body = await evaluate(
        server, "speedups", {"context": {"targetingKey": "db8e9a0d", "resourceType": "app"}}
    )
    assert (status, body["value"]) == (200, False)


@pytest.mark.parametrize(
    ("context", "code", "says"),
    [
        (None, "TARGETING_KEY_MISSING", "targetingKey"),
        ({}, "TARGETING_KEY_MISSING", "targetingKey"),
        ({"resourceType": "pipeline"}, "TARGETING_KEY_MISSING", "targetingKey"),
        ({"targetingKey": "", "resourceType": "pipeline"}, "TARGETING_KEY_MISSING", "targetingKey"),
        ({"targetingKey": None, "resourceType": "pipeline"}, "TARGETING_KEY_MISSING", "target"),
        ("db8e9a0d", "INVALID_CONTEXT", "JSON object"),
        ([CONTEXT], "INVALID_CONTEXT", "JSON object"),
        ({"targetingKey": 42, "resourceType": "pipeline"}, "INVALID_CONTEXT", "string"),
        ({"targetingKey": "db8e9a0d"}, "INVALID_CONTEXT", "resourceType"),
        ({"targetingKey": "db8e9a0d", "resourceType": 7}, "INVALID_CONTEXT", "resourceType"),
        ({"targetingKey": "db8e9a0d", "resourceType": "Pipeline"}, "INVALID_CONTEXT", "slug"),
        ({"targetingKey": "x" * 257, "resourceType": "pipeline"}, "INVALID_CONTEXT", "257"),
        ({"targetingKey": "a\nb", "resourceType": "pipeline"}, "INVALID_CONTEXT", "U+000A"),
    ],
)
async def test_a_context_that_names_no_resource_is_a_400(
    server: Server, context: Any, code: str, says: str
) -> None:
    body = {} if context is None else {"context": context}
    status, answer = await evaluate(server, "speedups", body)
    assert status == 400
    assert answer["key"] == "speedups"
    assert answer["errorCode"] == code
    assert says in answer["errorDetails"]
    status, answer, _ = await bulk(server, body)
    assert (status, answer["errorCode"]) == (400, code)
    assert "key" not in answer


async def test_resource_id_length_boundary(server: Server) -> None:
    for length, status in ((1, 200), (256, 200), (257, 400)):
        body = {"context": {"targetingKey": "x" * length, "resourceType": "pipeline"}}
        assert (await evaluate(server, "speedups", body))[0] == status


@pytest.mark.parametrize(
    "key", ["Speedups", "a" * 65, "spaces here", "-leading", "über", "a/b", "a\nb", ""]
)
async def test_a_key_that_is_no_feature_name_is_flag_not_found(server: Server, key: str) -> None:
    status, answer = await evaluate(server, quote(key, safe="/"))
    assert status == 404
    assert answer["errorCode"] == "FLAG_NOT_FOUND"
    assert answer["key"] == key
    assert "feature name" in answer["errorDetails"]
    # 64 characters is still a name.
    assert (await evaluate(server, "a" * 64))[0] == 200


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "must be JSON"),
        (b"{not json", "must be JSON"),
        (b"[]", "JSON object"),
        (b'"context"', "JSON object"),
        (b'{"context": {"targetingKey": "a"}, "context": {"targetingKey": "b"}}', "repeats"),
        (b"[" * 5000 + b"]" * 5000, "must be JSON"),
    ],
)
async def test_a_body_that_is_no_json_object_is_a_parse_error(
    server: Server, raw: bytes, says: str
) -> None:
    status, answer = await evaluate(server, "speedups", raw=raw)
    assert (status, answer["errorCode"]) == (400, "PARSE_ERROR")
    assert says in answer["errorDetails"]


async def test_body_size_boundary(server: Server) -> None:
    def padded(size: int) -> bytes:
        start = json.dumps({"context": CONTEXT, "pad": ""}).encode()
        raw = start[:-2] + b"x" * (size - len(start)) + b'"}'
        assert len(raw) == size
        return raw

    assert (await evaluate(server, "speedups", raw=padded(MAX_BODY)))[0] == 200
    status, answer = await evaluate(server, "speedups", raw=padded(MAX_BODY + 1))
    assert (status, answer["errorCode"]) == (400, "PARSE_ERROR")
    assert str(MAX_BODY) in answer["errorDetails"]


async def test_other_methods_are_405_with_allow_post(server: Server) -> None:
    for path in ("/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/speedups"):
        for method in ("GET", "PUT", "DELETE"):
            async with server.session.request(method, f"{server.url}{path}") as response:
                assert response.status == 405
                assert response.headers["Allow"] == "POST"
                assert (await response.json())["errorCode"] == "GENERAL"


ERROR_CODES = ("PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "FLAG_NOT_FOUND")
contexts = st.fixed_dictionaries(
    {},
    optional={
        "targetingKey": st.text(max_size=300) | json_values,
        "resourceType": st.sampled_from(["pipeline", "app"]) | st.text(max_size=70) | json_values,
    },
)
bodies = st.fixed_dictionaries({}, optional={"context": contexts | json_values}) | json_values


async def test_whatever_a_client_sends_the_answer_is_ofrep_never_a_500(server: Server) -> None:
    await server.gql(ADD, {"r": PIPELINE, "f": "speedups"})
    requests: list[tuple[str, bytes]] = []

    # "." and ".." are path segments every client resolves before sending: no flag path.
    keys = st.sampled_from(["speedups", "x"]) | st.text(max_size=70).filter(
        lambda key: key not in (".", "..")
    )

    @settings(max_examples=150, deadline=None, database=None)
    @given(keys, bodies, st.booleans())
    def collect(key: str, payload: Any, cut: bool) -> None:
        text = json.dumps(payload)
        requests.append((key, text.encode()[: len(text) // 2] if cut else text.encode()))

    collect()
    for key, raw in requests:
        status, answer = await evaluate(server, quote(key, safe=""), raw=raw)
        assert status in (200, 400, 404), (key, raw, answer)
        if status == 200:
            assert answer["value"] is (answer["reason"] == "TARGETING_MATCH")
        else:
            assert answer["errorCode"] in ERROR_CODES
            assert answer["key"] == key


# -- bulk evaluation --------------------------------------------------------------------


async def test_bulk_answers_every_feature_the_resource_has_with_an_etag(server: Server) -> None:
    status, answer, headers = await bulk(server)
    assert (status, answer) == (200, {"flags": []})
    empty_tag = headers["ETag"]
    for feature in ("speedups", "beta"):
        await server.gql(ADD, {"r": PIPELINE, "f": feature})
    await server.gql(ADD, {"r": {"type": "app", "id": "db8e9a0d"}, "f": "gamma"})
    status, answer, headers = await bulk(server)
    assert status == 200
    assert answer == {
        "flags": [
            {"key": "beta", "value": True, "reason": "TARGETING_MATCH", "variant": "on"},
            {"key": "speedups", "value": True, "reason": "TARGETING_MATCH", "variant": "on"},
        ]
    }
    etag = headers["ETag"]
    assert etag != empty_tag
    assert etag.startswith('"')
    assert etag.endswith('"')

    for named in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, answer, headers = await bulk(server, headers={"If-None-Match": named})
        assert (status, answer, headers["ETag"]) == (304, None, etag)
    status, _, _ = await bulk(server, headers={"If-None-Match": empty_tag})
    assert status == 200

    await server.gql(REMOVE, {"r": PIPELINE, "f": "beta"})
    status, answer, headers = await bulk(server, headers={"If-None-Match": etag})
    assert status == 200, "a change answers the new flags"
    assert [flag["key"] for flag in answer["flags"]] == ["speedups"]
    assert headers["ETag"] != etag


def test_the_default_resource_type_is_a_checked_setting(tmp_path: Path) -> None:
    config = tmp_path / "features.toml"
    config.write_text('[openfeature]\ndefault_resource_type = "pipeline"\n')
    settings = load_settings(config_file=config, env={})
    assert settings.openfeature_default_resource_type == "pipeline"
    config.write_text('[openfeature]\ndefault_resource_type = "Pipeline"\n')
    with pytest.raises(ConfigError, match="default_resource_type must be a lowercase slug"):
        load_settings(config_file=config, env={})
    config.write_text('[openfeature]\ndefault_type = "pipeline"\n')
    with pytest.raises(ConfigError, match=r"unknown key.*'default_type'.*default_resource_type"):
        load_settings(config_file=config, env={})


# -- tokens -----------------------------------------------------------------------------


async def test_tokens_and_scopes_apply(start_server: StartServer) -> None:
    tables, secrets = make_tokens(reader="read", writer="write")
    server = await start_server(auth_tokens=tables)
    for call in (
        lambda h: evaluate(server, "speedups", headers=h),
        lambda h: bulk(server, headers=h),
    ):
        assert (await call({}))[0] == 401
        assert (await call(bearer("fgql_not-a-token-anyone-has")))[0] == 401
        status, answer, *_ = await call(bearer(secrets["writer"]))
        assert status == 403
        assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert (await call(bearer(secrets["reader"])))[0] == 200
    async with server.session.post(f"{server.url}/ofrep/v1/evaluate/flags/x") as response:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- the store's failures ---------------------------------------------------------------


async def test_a_store_outage_is_a_503_general_error_that_says_retrying_is_safe(
    start_server: StartServer,
) -> None:
    server = await start_server({"plugin": "failing", "inner": "memory"})
    store: Any = server.service.store
    store.change_faults({"outage": True})
    async with server.session.post(
        f"{server.url}/ofrep/v1/evaluate/flags/speedups", json={"context": CONTEXT}
    ) as response:
        status, answer, headers = response.status, await response.json(), response.headers
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert headers["Content-Type"] == "application/json"
    assert answer["key"] == "speedups"
    assert answer["errorCode"] == "GENERAL"
    assert answer["errorDetails"] == (
        "The feature store is unavailable; the flag was not evaluated. Retrying is safe."
    )
    assert answer["metadata"]["injected"] is True
    assert answer["metadata"]["requestId"] == headers["X-Request-ID"]
    status, answer, headers = await bulk(server)
    assert (status, answer["errorCode"], headers["Retry-After"]) == (503, "GENERAL", "1")
    assert "unavailable" in answer["errorDetails"]
    assert "key" not in answer
    store.change_faults({"outage": False})
    assert (await evaluate(server, "speedups"))[0] == 200


async def test_a_store_past_its_deadline_is_a_503_general_error_that_says_so(
    start_server: StartServer,
) -> None:
    server = await start_server(
        {"plugin": "slow", "delay_ms": 300, "operations": ["has"], "inner": "memory"},
        deadline=0.05,
    )
    status, answer = await evaluate(server, "speedups")
    assert (status, answer["errorCode"]) == (503, "GENERAL")
    assert answer["errorDetails"] == (
        "The feature store did not answer in time; the flag was not evaluated. Retrying is safe."
    )
    assert answer["metadata"]["injected"] is True


async def test_an_unexpected_failure_is_a_500_that_quotes_the_request_id_and_nothing_else(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server("buggy", extra_plugins=[BrokenStoresPlugin()])
    with caplog.at_level(logging.ERROR, logger="features_gql.ofrep"):
        status, answer = await evaluate(server, "speedups", headers={"X-Request-ID": "trace-9"})
    assert status == 500
    assert answer == {
        "errorCode": "GENERAL",
        "errorDetails": "Internal error; quote request id trace-9 when reporting it.",
        "metadata": {"requestId": "trace-9"},
    }
    (logged,) = [r for r in caplog.records if r.name == "features_gql.ofrep"]
    assert logged.fields["request_id"] == "trace-9"  # type: ignore[attr-defined]
    assert logged.exc_info is not None, "the traceback goes to the log, not the client"


# -- metrics and the request log --------------------------------------------------------


async def test_evaluations_are_counted_and_refusals_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="features_gql.request"):
        await evaluate(server, "speedups")
        await evaluate(server, "speedups", {"context": {}})
        await bulk(server)
    async with server.session.get(f"{server.url}/metrics") as response:
        text = await response.text()
    ok = 'features_gql_ofrep_request_seconds_count{endpoint="evaluate",outcome="ok"} 1.0'
    assert ok in text
    rejected = 'features_gql_ofrep_request_seconds_count{endpoint="evaluate",outcome="rejected"}'
    assert f"{rejected} 1.0" in text
    assert 'features_gql_ofrep_request_seconds_count{endpoint="bulk",outcome="ok"} 1.0' in text
    assert 'features_gql_ofrep_errors_total{code="TARGETING_KEY_MISSING"} 1.0' in text
    assert "features_gql_graphql_request_seconds_count" not in text
    lines = [r for r in caplog.records if r.getMessage() == "ofrep request"]
    assert len(lines) == 1, "successful reads are not logged at INFO"
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert (fields["operation"], fields["status"], fields["errors"]) == (
        "evaluate",
        400,
        "TARGETING_KEY_MISSING",
    )


# -- the community's OFREP provider through the OpenFeature SDK -------------------------


@pytest.fixture
def openfeature_domain() -> Iterator[str]:
    domain = f"ofrep-{uuid.uuid4().hex}"
    yield domain
    openfeature_api.clear_providers()


def test_the_openfeature_ofrep_provider_evaluates_features(openfeature_domain: str) -> None:
    tables, secrets = make_tokens(app="read", deployer="read,write")
    with service_thread(auth_tokens=tables) as service:
        added = service.gql(ADD, {"r": PIPELINE, "f": "speedups"}, bearer(secrets["deployer"]))
        assert added == {"data": {"addFeature": {"changed": True}}}
        provider = OFREPProvider(service.url, headers_factory=lambda: bearer(secrets["app"]))
        openfeature_api.set_provider_and_wait(provider, openfeature_domain)
        client = openfeature_api.get_client(openfeature_domain)
        context = EvaluationContext("db8e9a0d", {"resourceType": "pipeline"})

        has = client.get_boolean_details("speedups", False, context)
        assert (has.value, has.reason, has.variant, has.error_code) == (
            True,
            Reason.TARGETING_MATCH,
            "on",
            None,
        )
        lacks = client.get_boolean_details("beta", True, context)
        assert (lacks.value, lacks.reason, lacks.variant, lacks.error_code) == (
            False,
            Reason.DEFAULT,
            "off",
            None,
        )
        assert client.get_boolean_value("speedups", False, context) is True

        missing = client.get_boolean_details("speedups", False, EvaluationContext())
        assert (missing.value, missing.error_code) == (False, ErrorCode.TARGETING_KEY_MISSING)
        assert "targetingKey" in (missing.error_message or "")

        wrong = client.get_boolean_details(
            "speedups", False, EvaluationContext("db8e9a0d", {"resourceType": "Not A Slug"})
        )
        assert (wrong.value, wrong.error_code) == (False, ErrorCode.INVALID_CONTEXT)
        assert "resourceType" in (wrong.error_message or "")

        unknown = client.get_boolean_details("Not-A-Feature", False, context)
        assert (unknown.value, unknown.error_code) == (False, ErrorCode.FLAG_NOT_FOUND)

        anonymous = OFREPProvider(service.url)
        openfeature_api.set_provider_and_wait(anonymous, openfeature_domain)
        refused = client.get_boolean_details("speedups", False, context)
        assert (refused.value, refused.error_code) == (False, ErrorCode.GENERAL)
