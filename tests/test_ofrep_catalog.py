"""OFREP with the feature catalog, over the real server: strict mode's FLAG_NOT_FOUND,
bulk answers that list every defined feature, ETags that follow the catalog, a catalog
that changes while the service runs (through it, or through another writer of its
store), a catalog that cannot be loaded at start-up (the project's failing and slow
stores), and the community's OFREP provider through the OpenFeature SDK."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api as openfeature_api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from features_gql.bootstrap import build
from features_gql.config import Settings
from tests.conftest import Server, StartServer
from tests.service_thread import ServiceThread, service_thread
from tests.test_ofrep import ADD, CONTEXT, PIPELINE, bulk, evaluate

DEFINE = """mutation ($name: String!) {
  defineFeature(input: {name: $name}) { ... on FeatureDefinitionChange { changed } }
}"""
ARCHIVE = """mutation ($name: String!) {
  archiveFeature(name: $name) { ... on FeatureDefinitionChange { changed } }
}"""
NOT_LOADED = (
    "The feature catalog has not been loaded yet (the store could not be read), so "
    "whether this flag is defined cannot be told; retrying is safe."
)


def on(key: str) -> dict[str, Any]:
    return {"key": key, "value": True, "reason": "TARGETING_MATCH", "variant": "on"}


def off(key: str) -> dict[str, Any]:
    return {"key": key, "value": False, "reason": "DEFAULT", "variant": "off"}


async def define(server: Server, name: str) -> None:
    answer = await server.gql(DEFINE, {"name": name})
    assert answer.data == {"defineFeature": {"changed": True}}, answer.body


async def archive(server: Server, name: str) -> None:
    answer = await server.gql(ARCHIVE, {"name": name})
    assert answer.data == {"archiveFeature": {"changed": True}}, answer.body


async def assign(server: Server, feature: str) -> None:
    answer = await server.gql(ADD, {"r": PIPELINE, "f": feature})
    assert answer.data == {"addFeature": {"changed": True}}, answer.body


async def flags(server: Server) -> list[dict[str, Any]]:
    status, answer, _ = await bulk(server)
    assert status == 200, answer
    return list(answer["flags"])


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``condition``, for at most a generous deadline (never a fixed sleep)."""
    try:
        async with asyncio.timeout(10):
            while not await condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def status_of(server: Server, key: str) -> int:
    return (await evaluate(server, key))[0]


# -- strict mode ------------------------------------------------------------------------


async def test_strict_mode_answers_flag_not_found_for_an_undefined_or_archived_feature(
    start_server: StartServer,
) -> None:
    server = await start_server(catalog_strict=True)
    await define(server, "speedups")
    await assign(server, "speedups")
    assert await evaluate(server, "speedups") == (200, on("speedups"))

    status, answer = await evaluate(server, "beta", headers={"X-Request-ID": "t-1"})
    assert status == 404
    assert answer == {
        "key": "beta",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "No feature named 'beta' is defined (or it is archived); the catalog "
        "is strict.",
        "metadata": {"requestId": "t-1"},
    }
    # Defined through this service: known at once, with no restart and no wait.
    await define(server, "beta")
    assert await evaluate(server, "beta") == (200, off("beta"))

    # Archived: not found, although the resource still has it...
    await archive(server, "speedups")
    status, answer = await evaluate(server, "speedups")
    assert (status, answer["errorCode"], answer["key"]) == (404, "FLAG_NOT_FOUND", "speedups")
    # ...which the bulk answer still says: it lists every feature the resource has.
    assert await flags(server) == [off("beta"), on("speedups")]
    # Defining it again brings it back.
    await define(server, "speedups")
    assert await evaluate(server, "speedups") == (200, on("speedups"))


async def test_without_strict_mode_unknown_features_evaluate_as_before(
    start_server: StartServer,
) -> None:
    server = await start_server()
    await define(server, "beta")
    await archive(server, "beta")
    for key in ("never-defined", "beta"):
        assert await evaluate(server, key) == (200, off(key))


# -- bulk evaluation --------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True])
async def test_bulk_lists_every_defined_feature_and_every_feature_the_resource_has(
    start_server: StartServer, strict: bool
) -> None:
    server = await start_server(catalog_strict=strict)
    assert await flags(server) == []
    for name in ("gamma", "beta", "delta"):
        await define(server, name)
    await assign(server, "delta")
    if not strict:
        await assign(server, "speedups")  # never defined: only strict mode refuses it
    listed = [off("beta"), on("delta"), off("gamma")]
    assert await flags(server) == (listed if strict else [*listed, on("speedups")])

    # Defined, then archived: no longer listed, unless the resource has it.
    await archive(server, "gamma")
    await archive(server, "delta")
    listed = [off("beta"), on("delta")]
    assert await flags(server) == (listed if strict else [*listed, on("speedups")])
    # Another resource: every defined feature, none of this one's.
    other = {"context": {"targetingKey": "other", "resourceType": "pipeline"}}
    status, answer, _ = await bulk(server, other)
    assert (status, answer) == (200, {"flags": [off("beta")]})


async def test_the_bulk_etag_changes_when_a_define_or_archive_changes_the_answer(
    start_server: StartServer,
) -> None:
    server = await start_server()
    await assign(server, "speedups")
    status, answer, headers = await bulk(server)
    assert (status, answer) == (200, {"flags": [on("speedups")]})
    before = headers["ETag"]
    assert (await bulk(server, headers={"If-None-Match": before}))[0] == 304

    await define(server, "beta")
    status, answer, headers = await bulk(server, headers={"If-None-Match": before})
    assert (status, answer) == (200, {"flags": [off("beta"), on("speedups")]})
    after_define = headers["ETag"]
    assert after_define != before
    assert (await bulk(server, headers={"If-None-Match": after_define}))[0] == 304

    await archive(server, "beta")
    status, answer, headers = await bulk(server, headers={"If-None-Match": after_define})
    assert (status, answer) == (200, {"flags": [on("speedups")]})
    # The ETag names the answer: the same flags again, the same tag as before the define.
    assert headers["ETag"] == before

    # A definition that changes nothing in the answer (the resource has the feature
    # anyway) leaves the client's copy current.
    await define(server, "speedups")
    status, _, headers = await bulk(server, headers={"If-None-Match": before})
    assert (status, headers["ETag"]) == (304, before)


# -- a catalog that changes while the service runs ---------------------------------------


async def test_a_feature_defined_by_another_writer_of_the_store_is_known_without_restart(
    start_server: StartServer, tmp_path: Path
) -> None:
    database = f"sqlite://{tmp_path / 'features.db'}"
    server = await start_server(database, catalog_strict=True)
    # Another process's writes, as far as the server can tell: its own store and API over
    # the same database, whose changes it learns from the change log only.
    other = build(Settings(store=database, loggers=()))
    await other.start()
    try:
        assert await status_of(server, "beta") == 404
        await other.api.define("beta", actor="elsewhere")
        await until(lambda: _status_is(server, "beta", 200), "the define to arrive")
        assert await evaluate(server, "beta") == (200, off("beta"))
        assert await flags(server) == [off("beta")]

        await other.api.archive("beta", actor="elsewhere")
        await until(lambda: _status_is(server, "beta", 404), "the archive to arrive")
        assert await flags(server) == []
    finally:
        await other.stop()


async def test_a_change_log_trimmed_past_the_view_reloads_it(
    start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"sqlite://{tmp_path / 'features.db'}"
    # The server's reads of the revision can be held (the slow store's stall), so that
    # the changes below surely land between two of its reads of the change log.
    held = {"plugin": "slow", "operations": ["revision"], "inner": database}
    server = await start_server(held, catalog_strict=True)
    slow_store: Any = server.service.store
    other = build(Settings(store=database, loggers=()))
    await other.start()
    try:
        with caplog.at_level(logging.INFO, logger="features_gql.catalog"):
            slow_store.change_faults({"stall": True})
            # A define, another, an archive of the first, then a trim that keeps only
            # the last change: the view cannot read the defines...
            await other.api.define("beta")
            await other.api.define("gamma")
            await other.api.archive("beta")
            await other.api.trim_changes(keep=1)
            slow_store.change_faults({"stall": False})
            # ...and loads the catalog again instead.
            await until(lambda: _status_is(server, "gamma", 200), "the reload")
        assert await status_of(server, "beta") == 404
        assert any("trimmed past the catalog" in r.getMessage() for r in caplog.records)
    finally:
        await other.stop()


async def _status_is(server: Server, key: str, status: int) -> bool:
    return await status_of(server, key) == status


# -- a catalog that cannot be loaded ----------------------------------------------------

#: Stores that keep the catalog from loading at start-up, and the change that ends it.
UNLOADABLE = {
    "store down": (
        {"plugin": "failing", "outage": True, "inner": "memory"},
        {"outage": False},
    ),
    "catalog reads failing": (
        {"plugin": "failing", "outage": True, "operations": ["list_features"], "inner": "memory"},
        {"outage": False},
    ),
    "catalog reads past the deadline": (
        {"plugin": "slow", "stall": True, "operations": ["list_features"], "inner": "memory"},
        {"stall": False},
    ),
}


@pytest.mark.parametrize("case", list(UNLOADABLE))
async def test_strict_mode_answers_503_until_the_catalog_loads_never_flag_not_found(
    start_server: StartServer, case: str
) -> None:
    store, recovery = UNLOADABLE[case]
    server = await start_server(store, catalog_strict=True, deadline=0.2)
    for key in ("speedups", "beta"):
        async with server.session.post(
            f"{server.url}/ofrep/v1/evaluate/flags/{key}", json={"context": CONTEXT}
        ) as response:
            answer = await response.json()
            assert (response.status, response.headers["Retry-After"]) == (503, "1")
        assert answer["errorCode"] == "GENERAL"
        assert answer["key"] == key
        assert answer["errorDetails"] == NOT_LOADED
    status, answer, headers = await bulk(server)
    assert (status, answer["errorCode"], headers["Retry-After"]) == (503, "GENERAL", "1")

    fault_store: Any = server.service.store
    fault_store.change_faults(recovery)
    # Defined while the view was still loading: the load that follows knows it.
    await define(server, "speedups")
    await until(lambda: _status_is(server, "beta", 404), "the catalog to load")
    assert await evaluate(server, "speedups") == (200, off("speedups"))
    assert await flags(server) == [off("speedups")]


async def test_without_strict_mode_an_unloaded_catalog_still_evaluates(
    start_server: StartServer,
) -> None:
    store, recovery = UNLOADABLE["catalog reads failing"]
    server = await start_server(store)
    await define(server, "beta")
    await assign(server, "speedups")
    # Not known yet to be defined, but evaluated all the same; the bulk answer lists what
    # the resource has, which is right for every flag it lists.
    assert await evaluate(server, "beta") == (200, off("beta"))
    assert await flags(server) == [on("speedups")]
    fault_store: Any = server.service.store
    fault_store.change_faults(recovery)
    await until(lambda: _bulk_has(server, "beta"), "the catalog to load")
    assert await flags(server) == [off("beta"), on("speedups")]


async def _bulk_has(server: Server, key: str) -> bool:
    return any(flag["key"] == key for flag in await flags(server))


# -- the community's OFREP provider through the OpenFeature SDK -------------------------


@pytest.fixture
def openfeature_domain() -> Iterator[str]:
    domain = f"ofrep-catalog-{uuid.uuid4().hex}"
    yield domain
    openfeature_api.clear_providers()


def change_faults(service: ServiceThread, changes: dict[str, Any]) -> None:
    """Change the faults of the service's store, on the service's own event loop."""

    async def change() -> None:
        store: Any = service.service.store
        store.change_faults(changes)

    asyncio.run_coroutine_threadsafe(change(), service.loop).result(timeout=10)


def test_the_ofrep_provider_reports_flag_not_found_and_outages_as_errors_with_defaults(
    openfeature_domain: str,
) -> None:
    store = {"plugin": "failing", "inner": "memory"}
    with service_thread(store, catalog_strict=True) as service:
        service.gql(DEFINE, {"name": "speedups"}, {})
        service.gql(ADD, {"r": PIPELINE, "f": "speedups"}, {})
        openfeature_api.set_provider_and_wait(OFREPProvider(service.url), openfeature_domain)
        client = openfeature_api.get_client(openfeature_domain)
        context = EvaluationContext("db8e9a0d", {"resourceType": "pipeline"})

        has = client.get_boolean_details("speedups", False, context)
        assert (has.value, has.reason, has.error_code) == (True, Reason.TARGETING_MATCH, None)
        undefined = client.get_boolean_details("beta", True, context)
        assert (undefined.value, undefined.reason, undefined.error_code) == (
            True,
            Reason.ERROR,
            ErrorCode.FLAG_NOT_FOUND,
        )
        assert "No feature named 'beta' is defined" in (undefined.error_message or "")

        # The store goes down: the SDK answers the caller's default with a GENERAL error,
        # at once, and evaluates again as soon as the store is back (a 503 pauses nothing).
        change_faults(service, {"outage": True})
        down = client.get_boolean_details("speedups", False, context)
        assert (down.value, down.reason, down.error_code) == (
            False,
            Reason.ERROR,
            ErrorCode.GENERAL,
        )
        assert "The feature store is unavailable" in (down.error_message or "")
        assert "Retrying is safe" in (down.error_message or "")
        change_faults(service, {"outage": False})
        back = client.get_boolean_details("speedups", False, context)
        assert (back.value, back.error_code) == (True, None)
