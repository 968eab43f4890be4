"""Operation events reach every sink off the request path; a bad sink hurts nobody."""

from __future__ import annotations

import threading

from features_gql import FeaturesAPI, hookimpl
from features_gql.events import EventDispatcher, OperationEvent
from features_gql.plugin_manager import collect, create_plugin_manager
from features_gql_plugins.memory_store import MemoryStore


def event(op: str = "has") -> OperationEvent:
    return OperationEvent(store="memory", op=op, duration=0.001, outcome="ok")


def test_raising_sink_is_counted_and_does_not_stop_others() -> None:
    seen: list[OperationEvent] = []

    def broken(_: OperationEvent) -> None:
        raise RuntimeError("sink is broken")

    dispatcher = EventDispatcher([("broken", broken), ("good", seen.append)])
    dispatcher.start()
    for _ in range(100):
        dispatcher.emit(event())
    assert dispatcher.flush()
    dispatcher.stop()
    assert len(seen) == 100
    assert dispatcher.health.failures == {"broken": 100}


def test_blocked_sink_does_not_block_emit_and_overflow_is_counted() -> None:
    release = threading.Event()

    def stuck(_: OperationEvent) -> None:
        release.wait(10)

    dispatcher = EventDispatcher([("stuck", stuck)], maxsize=10)
    dispatcher.start()
    # Emitting while the sink is stuck must complete; a blocking emit would hang here.
    emitter = threading.Thread(target=lambda: [dispatcher.emit(event()) for _ in range(1000)])
    emitter.start()
    emitter.join(timeout=10)
    finished = not emitter.is_alive()
    release.set()
    dispatcher.stop()
    assert finished, "emit blocked on a stuck sink"
    # At most what the queue holds twice over got through: the sink thread takes what has
    # queued in one batch (up to 10) before its first call blocks, and 10 more then fit.
    assert dispatcher.health.dropped >= 1000 - 2 * 10 - 1


async def test_api_reports_every_store_call_through_the_hook() -> None:
    recorded: list[OperationEvent] = []

    class Recorder:
        @hookimpl
        def features_gql_operation_event(self, event: OperationEvent) -> None:
            recorded.append(event)

    plugins = collect(create_plugin_manager(extra=[Recorder()]))
    dispatcher = EventDispatcher(plugins.operation_sinks)
    dispatcher.start()
    api = FeaturesAPI(MemoryStore(), on_event=dispatcher.emit)
    await api.add(("app", "a"), "f")
    assert await api.has(("app", "a"), "f") is True
    assert await api.check_many([(("app", "a"), "f"), (("app", "b"), "f")]) == [True, False]
    dispatcher.stop()
    assert [(e.op, e.outcome, e.items) for e in recorded] == [
        ("add", "ok", 1),
        ("has", "ok", 1),
        ("check_many", "ok", 2),
    ]
    assert recorded[0].resource == "app/a"
    assert recorded[0].feature == "f"


def test_gate_keeps_unwanted_events_off_the_sink_thread() -> None:
    seen: list[OperationEvent] = []
    dispatcher = EventDispatcher([("errors-only", seen.append)], gate=lambda e: e.outcome != "ok")
    dispatcher.start()
    dispatcher.emit(event())
    failed = OperationEvent(store="memory", op="has", duration=0.001, outcome="timeout")
    dispatcher.emit(failed)
    dispatcher.stop()
    assert seen == [failed]


def test_loguru_at_warning_gates_successful_operations_but_not_hooks() -> None:
    from features_gql.bootstrap import build
    from features_gql.config import Settings

    quiet = build(Settings(store="memory", log_level="WARNING"))
    assert quiet.dispatcher._gate is not None
    assert quiet.dispatcher._gate(event()) is False
    assert quiet.dispatcher._gate(OperationEvent("memory", "has", 0.1, "timeout")) is True

    class Hook:
        @hookimpl
        def features_gql_operation_event(self, event: OperationEvent) -> None:
            pass

    hooked = build(Settings(store="memory", log_level="WARNING"), extra_plugins=[Hook()])
    assert hooked.dispatcher._gate is None


def test_stop_does_not_hang_on_a_stuck_sink() -> None:
    release = threading.Event()
    dispatcher = EventDispatcher([("stuck", lambda _: release.wait(30))], maxsize=5)
    dispatcher.start()
    for _ in range(50):
        dispatcher.emit(event())
    stopper = threading.Thread(target=dispatcher.stop, kwargs={"timeout": 0.3})
    stopper.start()
    stopper.join(10)
    stopped = not stopper.is_alive()
    release.set()
    assert stopped, "stop() hung on a stuck sink"
