"""Metrics, health, readiness and request logs of a real running service."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from features_gql import StoreUnavailable, hookimpl
from features_gql.domain import Resource
from features_gql.plugin_manager import collect, create_plugin_manager
from features_gql.stores import Store, StoreBuilder, StoreOptions, StoreRegistry
from features_gql_plugins.memory_store import MemoryStore
from tests.broken_stores import BrokenStoresPlugin
from tests.conftest import Server, StartServer
from tests.test_cli import clean_env, post

ROOT = Path(__file__).resolve().parent.parent
HAS = 'query Check($f: String!) { hasFeature(resource: {type: "app", id: "a1"}, feature: $f) }'


async def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with server.session.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class SwitchableStore(MemoryStore):
    """A memory store whose every call fails while ``down`` is set."""

    name = "switchable"
    down = False

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("switched off by the test")

    async def has(self, resource: Resource, feature: str) -> bool:
        if self.down:
            raise StoreUnavailable("switched off by the test")
        return await super().has(resource, feature)


class SlowHasStore(MemoryStore):
    name = "slowhas"
    never_suspends = False

    async def has(self, resource: Resource, feature: str) -> bool:
        await asyncio.sleep(0.05)
        return await super().has(resource, feature)


class ObservabilityStores:
    def __init__(self) -> None:
        self.switchable = SwitchableStore()

    @hookimpl
    def features_gql_register_stores(self, registry: StoreRegistry) -> None:
        def switchable(options: StoreOptions, builder: StoreBuilder) -> Store:
            return self.switchable

        def slow(options: StoreOptions, builder: StoreBuilder) -> Store:
            return SlowHasStore()

        registry.add("switchable", switchable, description="test: can be switched off")
        registry.add("slowhas", slow, description="test: has takes 50 ms")


async def test_metrics_count_what_was_sent(start_server: StartServer) -> None:
    server = await start_server("memory")
    ok, invalid = 7, 3
    for _ in range(ok):
        assert (await server.gql(HAS, {"f": "beta"})).errors == []
    for _ in range(invalid):
        assert (await server.gql(HAS, {"f": "NOT A SLUG"})).codes == ["BAD_USER_INPUT"]
    assert (await server.gql("{ nope }")).codes == ["GRAPHQL_VALIDATION_FAILED"]

    samples = await scrape(server)
    store_count = "features_gql_store_operation_seconds_count"
    assert value(samples, store_count, store="memory", operation="has", outcome="ok",
                 injected="false") == ok  # fmt: skip
    request_count = "features_gql_graphql_request_seconds_count"
    assert value(samples, request_count, operation="Check", outcome="ok") == ok
    assert value(samples, request_count, operation="Check", outcome="error") == invalid
    assert value(samples, request_count, operation="anonymous", outcome="rejected") == 1
    assert value(samples, "features_gql_graphql_errors_total", code="BAD_USER_INPUT") == invalid
    assert (
        value(samples, "features_gql_graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED") == 1
    )
    # The scrape itself is the only request in flight.
    assert value(samples, "features_gql_http_requests_in_flight") == 1
    assert ("process_cpu_seconds_total", ()) in samples
    assert value(samples, "features_gql_sink_events_dropped_total") == 0


async def test_store_failures_are_counted_by_outcome(start_server: StartServer) -> None:
    server = await start_server("down", extra_plugins=[BrokenStoresPlugin()])
    for _ in range(4):
        assert (await server.gql(HAS, {"f": "beta"})).codes == ["STORE_UNAVAILABLE"]
    samples = await scrape(server)
    assert value(samples, "features_gql_store_operation_seconds_count", store="down",
                 operation="has", outcome="unavailable", injected="false") == 4  # fmt: skip
    assert value(samples, "features_gql_graphql_errors_total", code="STORE_UNAVAILABLE") == 4


async def test_labels_never_carry_ids_and_operation_names_are_capped(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    secret = "resource-id-that-must-not-be-a-label"
    await server.gql(
        'mutation { addFeature(resource: {type: "app", id: "' + secret + '"}, '
        'feature: "secret-flag") { __typename } }'
    )
    for i in range(210):
        await server.gql(f"query Op{i} {{ revision }}")
    async with server.session.get(f"{server.url}/metrics") as response:
        text = await response.text()
    assert secret not in text
    assert "secret-flag" not in text
    samples = await scrape(server)
    names = {
        dict(labels)["operation"]
        for (name, labels) in samples
        if name == "features_gql_graphql_request_seconds_count"
    }
    assert "other" in names
    assert len(names) <= 200 + 3


async def test_readiness_follows_the_store(start_server: StartServer) -> None:
    stores = ObservabilityStores()
    server = await start_server("switchable", extra_plugins=[stores])

    async def ready() -> tuple[int, Any]:
        async with server.session.get(f"{server.url}/readyz") as response:
            return response.status, await response.json()

    assert (await ready())[0] == 200
    stores.switchable.down = True
    status, body = await ready()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["reason"] == "store unavailable"
    async with server.session.get(f"{server.url}/healthz") as response:
        assert response.status == 200, "liveness must not depend on the store"
    health = await server.gql("{ health { status store { name up reason latencyMs } } }")
    assert health.data["health"]["status"] == "degraded"
    assert health.data["health"]["store"]["reason"] == "unavailable"
    samples = await scrape(server)
    assert value(samples, "features_gql_store_up") == 0

    stores.switchable.down = False
    assert (await ready())[0] == 200
    health = await server.gql("{ health { status store { up } } }")
    assert health.data["health"] == {"status": "ok", "store": {"up": True}}


async def test_readiness_answers_fast_when_the_store_hangs(start_server: StartServer) -> None:
    server = await start_server("stalled", extra_plugins=[BrokenStoresPlugin()])
    async with server.session.get(f"{server.url}/readyz") as response:
        assert response.status == 503
        assert (await response.json())["reason"] == "store timeout"


ADD_BETA = (
    'mutation Add { addFeature(resource: {type: "app", id: "a1"}, feature: "beta") { __typename } }'
)


def _json_lines(level: str | None) -> list[dict[str, Any]]:
    from tests.test_cli import Serving

    args = ["--store", "memory", "--log-format", "json"]
    server = Serving([*args, "--log-level", level] if level else args, clean_env())
    try:
        post(server.port, HAS, {"f": "beta"})
        post(server.port, HAS, {"f": "BAD"})
        post(server.port, ADD_BETA, {})
    finally:
        output = server.stop()
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_default_log_has_writes_and_errors_but_not_each_flag_check() -> None:
    lines = _json_lines(None)
    requests = [line for line in lines if line["message"] == "graphql request"]
    assert [(r["operation"], r["outcome"]) for r in requests] == [
        ("Check", "error"),
        ("Add", "ok"),
    ]
    failed, write = requests
    assert failed["errors"] == "BAD_USER_INPUT"
    assert write["status"] == 200
    assert write["store_calls"] == 1
    assert "errors" not in write
    operations = [line for line in lines if line["message"] == "store operation"]
    assert [(o["op"], o["request_id"]) for o in operations] == [("add", write["request_id"])]


def test_debug_log_has_one_line_per_request_with_ids() -> None:
    lines = _json_lines("DEBUG")
    requests = [line for line in lines if line["message"] == "graphql request"]
    assert [(r["operation"], r["outcome"]) for r in requests] == [
        ("Check", "ok"),
        ("Check", "error"),
        ("Add", "ok"),
    ]
    first = requests[0]
    assert first["store_calls"] == 1
    operations = [line for line in lines if line["message"] == "store operation"]
    # Before any request, the catalog's view loads (no request id); then the first check.
    assert [o["op"] for o in operations if "request_id" not in o] == ["revision", "list_features"]
    operation = next(o for o in operations if "request_id" in o)
    assert operation["op"] == "has"
    assert operation["request_id"] == first["request_id"]


async def test_slow_requests_log_their_slowest_store_calls(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(
        "slowhas", extra_plugins=[ObservabilityStores()], slow_request_ms=10
    )
    with caplog.at_level("INFO", logger="features_gql.request"):
        await server.gql(HAS, {"f": "beta"})
    warnings = [r for r in caplog.records if r.getMessage() == "slow graphql request"]
    assert len(warnings) == 1
    fields = warnings[0].fields  # type: ignore[attr-defined]
    assert fields["slowest_store_calls"].startswith("has=")
    assert fields["threshold_ms"] == 10


def test_example_statsd_sink_sends_a_timer_per_operation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    monkeypatch.setenv("STATSD_PORT", str(listener.getsockname()[1]))
    plugins = collect(create_plugin_manager(ROOT / "examples"))
    (sink,) = [sink for name, sink in plugins.operation_sinks if name == "statsd_sink.py"]
    from features_gql.events import OperationEvent

    sink(OperationEvent(store="sqlite", op="has", duration=0.00005, outcome="ok"))
    data, _ = listener.recvfrom(1024)
    listener.close()
    assert data == b"features_gql.store.has:0.050|ms|#store:sqlite,outcome:ok,injected:false"


async def test_injected_failures_are_counted_apart(start_server: StartServer) -> None:
    server = await start_server(
        {"plugin": "failing", "every_nth": 2, "operations": ["has"], "inner": "memory"}
    )
    answers = [await server.gql(HAS, {"f": "beta"}) for _ in range(10)]
    assert sum(r.codes == ["STORE_UNAVAILABLE"] for r in answers) == 5
    assert all(r.errors[0]["extensions"]["injected"] for r in answers if r.errors)
    samples = await scrape(server)
    count = "features_gql_store_operation_seconds_count"
    labels = {"store": "failing(memory)", "operation": "has"}
    assert value(samples, count, **labels, outcome="ok", injected="false") == 5
    assert value(samples, count, **labels, outcome="unavailable", injected="true") == 5
    assert value(samples, count, **labels, outcome="unavailable", injected="false") == 0
    assert value(samples, "features_gql_graphql_errors_total", code="STORE_UNAVAILABLE") == 5
    request_count = "features_gql_graphql_request_seconds_count"
    assert value(samples, request_count, operation="Check", outcome="error") == 5
    assert value(samples, request_count, operation="Check", outcome="ok") == 5
