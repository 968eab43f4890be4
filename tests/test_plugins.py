"""Plugins are called through pluggy: wrappers, ordering and names work as pluggy documents."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from features_gql import hookimpl
from features_gql.bootstrap import build
from features_gql.config import Settings
from features_gql.errors import PluginError
from features_gql.events import OperationEvent
from features_gql.loggers import Logger, LoggerRegistry, LogSettings
from features_gql.plugin_manager import collect, create_plugin_manager, describe
from features_gql.registry import Registry
from features_gql.stores import StoreRegistry
from tests.conftest import StartServer

HAS = '{ hasFeature(resource: {type: "app", id: "a1"}, feature: "f") }'


class Aliases:
    """A wrapper: runs around every other plugin's registrations, and sees them all."""

    def __init__(self) -> None:
        self.before: list[str] = []

    @hookimpl(wrapper=True)
    def features_gql_register_stores(self, registry: StoreRegistry) -> Generator[None]:
        self.before = registry.names()
        yield
        registry.add("ram", registry.get("memory").factory, description="memory, by another name")


def test_a_registration_wrapper_runs_around_every_other_plugin() -> None:
    aliases = Aliases()
    service = build(Settings(store="ram", loggers=()), extra_plugins=[aliases])
    assert service.store.name == "memory"
    assert aliases.before == []
    ram = service.plugins.stores.get("ram")
    assert ram.provided_by == "tests.test_plugins.Aliases"
    listed = {info.name: info for info in describe(service.plugins)}
    assert listed["tests.test_plugins.Aliases"].stores == ["ram"]
    assert listed["memory"].stores == ["memory"]


class FirstWord:
    def __init__(self, word: str) -> None:
        self.word = word

    @hookimpl(tryfirst=True)
    def features_gql_register_loggers(self, registry: LoggerRegistry) -> None:
        registry.add(self.word, _quiet, description="registered first")


class LastWord:
    def __init__(self, seen: list[list[str]]) -> None:
        self.seen = seen

    @hookimpl(trylast=True)
    def features_gql_register_loggers(self, registry: LoggerRegistry) -> None:
        self.seen.append(registry.names())


class _Quiet(Logger):
    def operation(self, event: OperationEvent) -> None:
        pass

    def close(self) -> None:
        pass


def _quiet(settings: LogSettings) -> Logger:
    return _Quiet()


def test_tryfirst_and_trylast_order_the_registrations() -> None:
    seen: list[list[str]] = []
    # Registered after the bundled plugins, so without tryfirst/trylast these two would
    # run before them (pluggy calls the last registered first).
    plugins = collect(create_plugin_manager(extra=[LastWord(seen), FirstWord("hush")]))
    assert seen == [sorted(["failing", "hush", "loguru", "slow"])]
    assert plugins.loggers.get("hush").provided_by == "tests.test_plugins.FirstWord"


def test_two_objects_of_one_plugin_class_are_told_apart() -> None:
    plugins = collect(create_plugin_manager(extra=[FirstWord("one"), FirstWord("two")]))
    owners = {plugins.loggers.get(name).provided_by for name in ("one", "two")}
    assert owners == {"tests.test_plugins.FirstWord", "tests.test_plugins.FirstWord#2"}


class Exploding:
    @hookimpl
    def features_gql_register_stores(self, registry: StoreRegistry) -> None:
        raise RuntimeError("cannot reach the licence server")


def test_a_plugin_object_that_fails_is_named_by_what_it_is() -> None:
    with pytest.raises(PluginError) as caught:
        collect(create_plugin_manager(extra=[Exploding()]))
    message = str(caught.value)
    assert message.startswith(
        "plugin 'tests.test_plugins.Exploding' failed in features_gql_register_stores"
    )
    assert "cannot reach the licence server" in message


class Recorder:
    def __init__(self) -> None:
        self.ops: list[str] = []

    @hookimpl
    def features_gql_operation_event(self, event: OperationEvent) -> None:
        self.ops.append(event.op)


class Refusing:
    @hookimpl
    def features_gql_operation_event(self, event: OperationEvent) -> None:
        raise RuntimeError("refused")


class Watch:
    """Wraps each sink's call: sees every call and what it raised."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    @hookimpl(wrapper=True)
    def features_gql_operation_event(self, event: OperationEvent) -> Generator[None]:
        try:
            yield
        except RuntimeError as exc:
            self.calls.append((event.op, str(exc)))
            raise
        self.calls.append((event.op, None))


async def test_an_event_wrapper_wraps_each_sink_and_sinks_stay_independent(
    start_server: StartServer,
) -> None:
    recorder, watch = Recorder(), Watch()
    server = await start_server("memory", extra_plugins=[Refusing(), recorder, watch])
    # The start-up's own store calls (the catalog's load) were refused by it already.
    refusing = "tests.test_plugins.Refusing"
    at_start = server.service.dispatcher.health.failures.get(refusing, 0)
    response = await server.gql(HAS)
    assert response.data == {"hasFeature": False}
    server.service.dispatcher.flush()
    assert "has" in recorder.ops  # the refusing sink did not keep the event from it
    calls_for_has = sorted((error or "") for op, error in watch.calls if op == "has")
    # The conftest's EventRecorder, the Recorder and the refusing sink: three sinks.
    assert calls_for_has == ["", "", "refused"]
    assert server.service.dispatcher.health.failures == {refusing: at_start + 1}


def test_the_store_and_logger_registries_are_one_kind_of_registry() -> None:
    stores, loggers = StoreRegistry(), LoggerRegistry()
    assert isinstance(stores, Registry)
    assert isinstance(loggers, Registry)
    for registry, kind in ((stores, "store"), (loggers, "logger")):
        with pytest.raises(PluginError, match=f"registered {kind} name 'Bad Name'"):
            registry.add("Bad Name", _quiet, description="")  # type: ignore[arg-type]
        registry.add("fine", _quiet, description="")  # type: ignore[arg-type]
        with pytest.raises(PluginError, match=f"{kind} 'fine' is registered twice"):
            registry.add("fine", _quiet, description="")  # type: ignore[arg-type]


class NotALogger:
    def operation(self, event: OperationEvent) -> None:
        pass

    def close(self) -> None:
        pass


class RegistersNotALogger:
    @hookimpl
    def features_gql_register_loggers(self, registry: LoggerRegistry) -> None:
        registry.add("half", lambda settings: NotALogger(), description="lacks accepts")  # type: ignore[arg-type, return-value]


def test_a_logger_without_accepts_is_refused_naming_its_plugin() -> None:
    with pytest.raises(PluginError, match=r"'half' \(from 'tests.test_plugins.RegistersNotA"):
        build(Settings(store="memory", loggers=("half",)), extra_plugins=[RegistersNotALogger()])
