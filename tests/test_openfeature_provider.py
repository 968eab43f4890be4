"""The in-process OpenFeature provider, through the OpenFeature SDK's own API: its
evaluations, and its events when changes arrive and when the store goes down."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from openfeature import api as openfeature_api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from features_gql import FeaturesAPI
from features_gql.openfeature import FeaturesProvider
from features_gql.replica import LocalReplica
from features_gql_plugins.failing_store import FailingStore
from features_gql_plugins.memory_store import MemoryStore

PIPELINE = ("pipeline", "db8e9a0d")
CONTEXT = EvaluationContext("db8e9a0d", {"resourceType": "pipeline"})


@dataclass
class Events:
    seen: list[tuple[ProviderEvent, EventDetails]] = field(default_factory=list)

    def handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def record(details: EventDetails) -> None:
            # The client reports its provider's state when a handler is added: before
            # set_provider that is the SDK's no-op provider's, which is not ours.
            if details.provider_name == "features-gql":
                self.seen.append((event, details))

        return record

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        return [details for kind, details in self.seen if kind is event]

    async def wait_for(self, event: ProviderEvent, count: int = 1) -> list[EventDetails]:
        async with asyncio.timeout(5):
            while len(self.of(event)) < count:
                await asyncio.sleep(0.005)
        return self.of(event)


@dataclass
class Setup:
    store: FailingStore
    api: FeaturesAPI
    replica: LocalReplica
    client: OpenFeatureClient
    events: Events
    domain: str


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    store = FailingStore(MemoryStore())
    api = FeaturesAPI(store)
    await api.add(PIPELINE, "speedups")
    replica = LocalReplica(api, interval=0.01)
    await replica.start()
    domain = f"in-process-{uuid.uuid4().hex}"
    client = openfeature_api.get_client(domain)
    events = Events()
    for event in ProviderEvent:
        client.add_handler(event, events.handler(event))
    openfeature_api.set_provider_and_wait(FeaturesProvider(replica), domain)
    try:
        yield Setup(store, api, replica, client, events, domain)
    finally:
        openfeature_api.clear_providers()
        await replica.stop()


async def test_evaluations_answer_from_the_replica(setup: Setup) -> None:
    client = setup.client
    assert client.get_provider_status() is ProviderStatus.READY
    await setup.events.wait_for(ProviderEvent.PROVIDER_READY)
    has = client.get_boolean_details("speedups", False, CONTEXT)
    assert (has.value, has.reason, has.variant, has.error_code) == (
        True,
        Reason.TARGETING_MATCH,
        "on",
        None,
    )
    lacks = client.get_boolean_details("beta", True, CONTEXT)
    assert (lacks.value, lacks.reason, lacks.variant) == (False, Reason.DEFAULT, "off")
    assert await client.get_boolean_value_async("speedups", False, CONTEXT) is True

    missing = client.get_boolean_details("speedups", False, EvaluationContext())
    assert (missing.value, missing.error_code) == (False, ErrorCode.TARGETING_KEY_MISSING)
    wrong = client.get_boolean_details(
        "speedups", True, EvaluationContext("db8e9a0d", {"resourceType": 3})
    )
    assert (wrong.value, wrong.error_code) == (True, ErrorCode.INVALID_CONTEXT)
    untyped = client.get_boolean_details("speedups", False, EvaluationContext("db8e9a0d"))
    assert untyped.error_code is ErrorCode.INVALID_CONTEXT
    assert "resourceType" in (untyped.error_message or "")
    not_a_name = client.get_boolean_details("Speedups", False, CONTEXT)
    assert not_a_name.error_code is ErrorCode.FLAG_NOT_FOUND
    as_text = client.get_string_details("speedups", "no", CONTEXT)
    assert (as_text.value, as_text.error_code) == ("no", ErrorCode.TYPE_MISMATCH)


async def test_a_default_resource_type_serves_contexts_without_one(setup: Setup) -> None:
    provider = FeaturesProvider(setup.replica, default_resource_type="pipeline")
    openfeature_api.set_provider_and_wait(provider, setup.domain)
    assert setup.client.get_boolean_value("speedups", False, EvaluationContext("db8e9a0d"))


async def test_changes_arrive_as_configuration_changed_with_their_flag_keys(setup: Setup) -> None:
    await setup.api.add(PIPELINE, "beta")
    await setup.api.add(("app", "a1"), "gamma")
    await setup.api.remove(PIPELINE, "speedups")
    changed: set[str] = set()
    async with asyncio.timeout(5):
        while changed != {"beta", "gamma", "speedups"}:
            await asyncio.sleep(0.005)
            changed = {
                key
                for details in setup.events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
                for key in details.flags_changed or ()
            }
    details = setup.events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[-1]
    assert details.metadata["revision"] == 4
    assert setup.client.get_boolean_value("beta", False, CONTEXT) is True
    assert setup.client.get_boolean_value("speedups", True, CONTEXT) is False


async def test_a_store_outage_makes_it_stale_and_recovery_ready_again(setup: Setup) -> None:
    setup.store.change_faults({"outage": True})
    (stale,) = await setup.events.wait_for(ProviderEvent.PROVIDER_STALE)
    assert "cannot follow the store" in (stale.message or "")
    assert setup.client.get_provider_status() is ProviderStatus.STALE
    # Stale, not wrong: the copy still answers, and one outage is one event.
    assert setup.client.get_boolean_value("speedups", False, CONTEXT) is True
    await asyncio.sleep(0.05)
    assert len(setup.events.of(ProviderEvent.PROVIDER_STALE)) == 1

    setup.store.change_faults({"outage": False})
    await setup.events.wait_for(ProviderEvent.PROVIDER_READY, count=2)
    assert setup.client.get_provider_status() is ProviderStatus.READY
    await setup.api.add(PIPELINE, "beta")
    await setup.events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert setup.client.get_boolean_value("beta", False, CONTEXT) is True


async def test_a_replica_that_has_not_loaded_is_not_ready() -> None:
    api = FeaturesAPI(MemoryStore())
    replica = LocalReplica(api, interval=0.01)
    domain = f"unloaded-{uuid.uuid4().hex}"
    try:
        # On the replica's own event loop the provider cannot wait for it: an error.
        client = openfeature_api.get_client(domain)
        with pytest.raises(ProviderNotReadyError, match="has not loaded"):
            openfeature_api.set_provider_and_wait(FeaturesProvider(replica), domain)
        assert client.get_provider_status() is ProviderStatus.ERROR

        # From another thread it waits for the replica to load, then is ready.
        provider = FeaturesProvider(replica, ready_timeout=5)
        waiting = threading.Thread(
            target=openfeature_api.set_provider_and_wait, args=(provider, domain)
        )
        waiting.start()
        await asyncio.sleep(0.05)
        assert client.get_provider_status() is ProviderStatus.NOT_READY
        await replica.start()
        async with asyncio.timeout(5):
            while waiting.is_alive():
                await asyncio.sleep(0.005)
        assert client.get_provider_status() is ProviderStatus.READY
    finally:
        openfeature_api.clear_providers()
        await replica.stop()


async def test_shutdown_stops_listening_to_the_replica(setup: Setup) -> None:
    assert len(setup.replica.listeners) == 1
    openfeature_api.clear_providers()
    async with asyncio.timeout(5):
        while setup.replica.listeners:
            await asyncio.sleep(0.005)


# -- the catalog ------------------------------------------------------------------------


async def test_a_strict_catalog_makes_undefined_and_archived_flags_not_found(
    setup: Setup,
) -> None:
    """Over a strict API the replica keeps the catalog too: a flag must be defined (and
    not archived) to evaluate, and a define or archive is a configuration change."""
    api = FeaturesAPI(setup.store, strict=True)
    await api.define("speedups")  # before the replica loads: in its snapshot
    await api.add(PIPELINE, "speedups")
    replica = LocalReplica(api, interval=0.01)
    await replica.start()
    try:
        openfeature_api.set_provider_and_wait(FeaturesProvider(replica), setup.domain)
        client = setup.client
        assert client.get_boolean_value("speedups", False, CONTEXT) is True
        beta = client.get_boolean_details("beta", True, CONTEXT)
        assert (beta.value, beta.reason, beta.error_code) == (
            True,
            Reason.ERROR,
            ErrorCode.FLAG_NOT_FOUND,
        )
        assert "No feature named 'beta' is defined" in (beta.error_message or "")

        async def changed(feature: str) -> None:
            async with asyncio.timeout(5):
                while not any(
                    feature in (details.flags_changed or ())
                    for details in setup.events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
                ):
                    await asyncio.sleep(0.005)

        await api.define("beta")  # after: followed
        await changed("beta")
        beta = client.get_boolean_details("beta", True, CONTEXT)
        assert (beta.value, beta.reason, beta.error_code) == (False, Reason.DEFAULT, None)

        await api.archive("speedups")
        await changed("speedups")
        gone = client.get_boolean_details("speedups", False, CONTEXT)
        assert gone.error_code is ErrorCode.FLAG_NOT_FOUND, "archived, though assigned"
        assert replica.catalog.names == {"beta"}
    finally:
        await replica.stop()


async def test_without_strict_mode_the_replica_knows_the_catalog_but_evaluates_any_name(
    setup: Setup,
) -> None:
    await setup.api.define("beta")
    async with asyncio.timeout(5):
        while "beta" not in setup.replica.catalog.names:
            await asyncio.sleep(0.005)
    never = setup.client.get_boolean_details("never-defined", True, CONTEXT)
    assert (never.value, never.reason, never.error_code) == (False, Reason.DEFAULT, None)
