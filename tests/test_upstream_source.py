"""The edge's source (features_gql.replication.upstream_source) on its own, over a scripted
client: what it yields from a subscription and while polling an upstream that serves no
WebSocket, when it says the copy is caught up, and when it says the upstream went back.

The edge following real upstreams through it is in tests/test_edge.py and
tests/test_edge_hostile_upstream.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime

import pytest

from features_gql.domain import ChangeEvent, Resource
from features_gql.errors import ChangesTrimmed
from features_gql.replication import upstream_source
from features_gql.replication.follower import SourceWentBack
from features_gql.replication.upstream_source import UpstreamSource
from features_gql.upstream import NoSubscriptions, UpstreamClient

AT = datetime(2026, 1, 1, tzinfo=UTC)


def change(revision: int) -> ChangeEvent:
    return ChangeEvent(revision, "add", Resource("pipeline", f"p{revision}"), "beta", AT)


class ScriptedClient(UpstreamClient):
    """An upstream holding ``log`` at revision ``head``. It refuses WebSockets unless
    ``websocket`` is set; then a subscription pushes what is put in ``pushed``, or raises
    ``refusal`` at once when that is set."""

    def __init__(self, *, websocket: bool = False) -> None:
        super().__init__("http://upstream.invalid/graphql")
        self.log = [change(1), change(2)]
        self.head = 2
        self.websocket = websocket
        self.pushed: asyncio.Queue[ChangeEvent] = asyncio.Queue()
        self.refusal: Exception | None = None
        self.subscriptions = 0

    async def revision(self) -> int:
        return self.head

    async def changes_since(self, after: int, *, limit: int = 1000) -> list[ChangeEvent]:
        return [c for c in self.log if c.revision > after][:limit]

    async def subscribe(self, after: int) -> AsyncGenerator[ChangeEvent, None]:
        self.subscriptions += 1
        if not self.websocket:
            raise NoSubscriptions("the upstream refused a WebSocket (400)")
        if self.refusal is not None:
            raise self.refusal
        while True:
            yield await self.pushed.get()


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_source, "POLL_INTERVAL", 0.01)


async def take(stream: AsyncGenerator[Sequence[ChangeEvent], None], count: int) -> list[list[int]]:
    return [[c.revision for c in await anext(stream)] for _ in range(count)]


async def test_polling_yields_changes_and_says_when_caught_up() -> None:
    client = ScriptedClient()
    source = UpstreamSource(client)
    assert await source.revision() == 2
    stream = source.follow(0)
    # Behind: the changes, then an empty batch once the copy is at the upstream's revision.
    assert await take(stream, 2) == [[1, 2], []]
    assert source.mode == "polling"
    client.log.append(change(3))
    client.head = 3
    assert await take(stream, 2) == [[3], []]
    await stream.aclose()


async def test_a_subscription_yields_each_change_alone() -> None:
    client = ScriptedClient(websocket=True)
    source = UpstreamSource(client)
    stream = source.follow(2)
    client.pushed.put_nowait(change(3))
    client.pushed.put_nowait(change(4))
    assert await take(stream, 2) == [[3], [4]]
    assert source.mode == "subscription"
    await stream.aclose()
    assert client.subscriptions == 1


async def test_an_error_of_the_subscription_is_the_sources() -> None:
    # An upstream whose log no longer holds the position: the follower reloads the copy.
    client = ScriptedClient(websocket=True)
    client.refusal = ChangesTrimmed(2, 5)
    stream = UpstreamSource(client).follow(2)
    with pytest.raises(ChangesTrimmed):
        await anext(stream)


async def test_an_upstream_behind_the_position_went_back() -> None:
    client = ScriptedClient()
    source = UpstreamSource(client)
    stream = source.follow(0)
    assert await take(stream, 2) == [[1, 2], []]
    # Restored from an older backup: its log and revision end before the copy's.
    client.log, client.head = client.log[:1], 1
    with pytest.raises(SourceWentBack):
        await anext(stream)


async def test_a_source_that_polls_tries_the_subscription_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream_source, "RETRY_SUBSCRIPTION", 0.05)
    client = ScriptedClient()
    source = UpstreamSource(client)
    stream = source.follow(2)
    async with asyncio.timeout(5):
        while client.subscriptions < 3:
            assert await take(stream, 1) == [[]]
    assert source.mode == "polling"
    await stream.aclose()
