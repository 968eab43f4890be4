"""Budgets of unproven connections and of slow bodies, against the real service on
127.0.0.1 (the service's own runner, as `serve` runs it): one address, or one token,
that misbehaves loses its own oldest connections while everybody else is served.

Misbehaving clients connect from 127.0.0.2 and up (Linux routes all of 127/8 to the
loopback interface), normal ones from 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from typing import Any

import pytest

from features_gql.http.connections import peer_address
from tests.conftest import Server, StartServer, make_tokens
from tests.test_connections import closed, read_response

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="binds clients to 127.0.0.2 and up"),
]

HAS = json.dumps({"query": '{ hasFeature(resource: {type: "a", id: "b"}, feature: "f") }'})
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def connect(server: Server, source: str) -> Connection:
    return await asyncio.open_connection("127.0.0.1", port_of(server), local_addr=(source, 0))


def post_head(token: str | None = None, length: int = len(HAS), close: bool = False) -> bytes:
    lines = [
        "POST /graphql HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def normal_request(server: Server, token: str | None = None) -> int:
    """A flag check on a fresh connection from 127.0.0.1; its status (0: no answer)."""
    try:
        async with asyncio.timeout(10):
            reader, writer = await connect(server, "127.0.0.1")
            writer.write(post_head(token, close=True) + HAS.encode())
            status, _, _ = await read_response(reader)
            writer.close()
            return status
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return 0


async def started(server: Server, source: str) -> Connection:
    """A connection that has sent the first line of a request, and no more."""
    reader, writer = await connect(server, source)
    writer.write(b"POST /graphql HTTP/1.1\r\n")
    await writer.drain()
    return reader, writer


async def closed_ones(connections: list[Connection], wait: float = 0.5) -> list[bool]:
    return list(await asyncio.gather(*(closed(reader, wait) for reader, _ in connections)))


def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()


async def metrics(server: Server) -> str:
    async with server.session.get(f"{server.url}/metrics") as response:
        return await response.text()


async def metric(server: Server, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", await metrics(server), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def dropped(server: Server, reason: str) -> float:
    return await metric(server, "features_gql_connections_dropped_total", f'{{reason="{reason}"}}')


# -- WebSockets, spoken by hand: a client that never sends connection_init is the point ----


def ws_frame(text: str) -> bytes:
    """A masked text frame, as a client sends it."""
    data = text.encode()
    mask = os.urandom(4)
    assert len(data) < 126
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
    return bytes((0x81, 0x80 | len(data))) + mask + masked


async def upgraded(server: Server, source: str, token: str | None = None) -> Connection:
    """A WebSocket (graphql-transport-ws) that has sent nothing since the upgrade."""
    reader, writer = await connect(server, source)
    headers = [
        "GET /graphql HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: graphql-transport-ws",
    ]
    if token is not None:
        headers.append(f"Authorization: Bearer {token}")
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def next_frame(reader: asyncio.StreamReader, wait: float = 10) -> tuple[int, bytes]:
    """The opcode and payload of the server's next frame."""
    async with asyncio.timeout(wait):
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        return first & 0x0F, await reader.readexactly(length)


async def close_of(reader: asyncio.StreamReader, wait: float = 10) -> tuple[int, str]:
    """The code and reason of the close frame the server sends next."""
    opcode, payload = await next_frame(reader, wait)
    assert opcode == 0x8, (opcode, payload)
    return int.from_bytes(payload[:2], "big"), payload[2:].decode()


def clean(caplog: pytest.LogCaptureFixture) -> None:
    """No traceback, and no error, in what the service logged.

    Except asyncio's note that aiohttp's own task for a force-closed connection
    (RequestHandler.start) was collected while pending: seen with the lowest aiohttp
    allowed (3.14.0), not with 3.14.5; it is aiohttp's bookkeeping, not an error of
    the service's."""
    bad = [
        r
        for r in caplog.records
        if (r.exc_info or r.levelno >= logging.ERROR)
        and not (r.name == "asyncio" and "RequestHandler.start()" in r.getMessage())
    ]
    assert not bad, [(r.name, r.getMessage()) for r in bad]
    assert not [r for r in caplog.records if "Unhandled exception" in r.getMessage()]


# -- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peername", "address"),
    [
        (("203.0.113.7", 50000), "203.0.113.7"),
        (("::ffff:203.0.113.7", 50000, 0, 0), "203.0.113.7"),
        (("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 50000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2::1", 50000, 0, 0), "2001:db8:1:2::/64"),
        (("fe80::1%eth0", 50000, 0, 2), "fe80::/64"),
        ("", ""),
        (None, ""),
    ],
)
def test_the_address_a_budget_is_kept_under(peername: object, address: str) -> None:
    assert peer_address(peername) == address


# -- unproven connections ------------------------------------------------------------------


async def test_an_address_at_its_budget_keeps_its_connections_and_past_it_loses_the_oldest(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server("memory", header_timeout=2, max_unproven_per_address=4)
    with caplog.at_level(logging.INFO):
        silent = await connect(server, "127.0.0.2")
        slow = [await started(server, "127.0.0.2") for _ in range(3)]
        await asyncio.sleep(0.4)  # past the grace (a tenth of the header timeout)
        # Exactly at the budget: nothing is closed.
        assert await closed_ones([silent, *slow]) == [False] * 4
        assert await metric(server, "features_gql_connections_unproven") == 4
        # One more: the oldest goes, without a word since it had sent nothing...
        slow.append(await started(server, "127.0.0.2"))
        assert await closed(silent[0], 0.5)
        assert await closed_ones(slow, 0.2) == [False] * 4
        # ...and the next oldest, which had started a request, with a JSON 429.
        slow.append(await started(server, "127.0.0.2"))
        status, headers, body = await read_response(slow[0][0])
        assert status == 429
        assert headers["retry-after"] == "1"
        assert headers["server"] == "features-gql"
        assert json.loads(body)["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
        assert await closed_ones(slow, 0.2) == [True, False, False, False, False]
        # Another address, and a normal client, are not concerned.
        other = [await started(server, "127.0.0.3") for _ in range(4)]
        assert await normal_request(server) == 200
        assert await closed_ones([*slow[1:], *other], 0.2) == [False] * 8
        assert await dropped(server, "unproven_address") == 2
        close_all([silent, *slow, *other])
    clean(caplog)
    # Counted, in one line per kind of event and interval.
    lines = [r for r in caplog.records if r.name == "features_gql.connections"]
    warned = [r for r in lines if r.levelno == logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert fields_of(warned[0])["address"] == "127.0.0.2"


async def test_connections_younger_than_the_grace_are_spared_until_it_passes(
    start_server: StartServer,
) -> None:
    # A client's pool opening more connections at once than the budget: each sends its
    # request a moment later, and none is lost.
    server = await start_server("memory", header_timeout=5, max_unproven_per_address=4)
    pool = [await connect(server, "127.0.0.2") for _ in range(8)]
    for _, writer in pool:
        writer.write(post_head(close=True) + HAS.encode())
    answers = await asyncio.gather(*(read_response(reader) for reader, _ in pool))
    assert [status for status, _, _ in answers] == [200] * 8
    close_all(pool)
    # Connections that stay unproven past the grace are closed by the sweep, the oldest
    # first, down to the budget.
    slow = [await started(server, "127.0.0.2") for _ in range(6)]
    assert await closed_ones(slow, 0.1) == [False] * 6
    await asyncio.sleep(1.6)  # the grace (0.5 s) and a sweep (every second)
    assert await closed_ones(slow, 0.2) == [True, True, False, False, False, False]
    assert await dropped(server, "unproven_address") == 2
    close_all(slow)


async def test_the_global_budget_closes_the_oldest_unproven_connection_of_any_address(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(
        "memory", header_timeout=2, max_unproven_per_address=4, max_unproven_connections=6
    )
    with caplog.at_level(logging.INFO):
        slow = [await started(server, f"127.0.0.{2 + i % 2}") for i in range(6)]
        await asyncio.sleep(0.4)
        # At the budget: all stay.
        assert await closed_ones(slow) == [False] * 6
        # Past it, from a third address: the oldest of all goes, with a JSON 503.
        slow.append(await started(server, "127.0.0.4"))
        status, headers, body = await read_response(slow[0][0])
        assert (status, headers["retry-after"]) == (503, "1")
        assert json.loads(body)["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert await closed_ones(slow, 0.2) == [True] + [False] * 6
        # A normal client is served; its own connection, unproven for a moment, takes the
        # place of the next oldest.
        assert await normal_request(server) == 200
        assert await closed_ones(slow, 0.2) == [True, True] + [False] * 5
        close_all(slow)
        await asyncio.sleep(0.2)
        assert await dropped(server, "unproven_global") == 2
        assert await dropped(server, "unproven_address") == 0
    clean(caplog)


async def test_at_max_connections_unproven_connections_go_before_idle_keep_alive_ones(
    start_server: StartServer,
) -> None:
    server = await start_server("memory", header_timeout=10, max_connections=4)
    idle = [await connect(server, "127.0.0.1") for _ in range(2)]
    for reader, writer in idle:
        writer.write(post_head() + HAS.encode())
        assert (await read_response(reader))[0] == 200
    slow = [await started(server, "127.0.0.2") for _ in range(2)]
    await asyncio.sleep(1.2)  # past the grace (1 s)
    # Full: each newcomer takes the place of the oldest unproven connection...
    newcomers = [await started(server, "127.0.0.3") for _ in range(2)]
    assert await closed_ones(slow) == [True, True]
    assert await closed_ones(idle, 0.1) == [False, False]
    # ...past its grace; a younger one is spared for the longest-idle keep-alive one.
    newcomers[0][1].write(b"Host: x\r\n\r\n")  # its request complete: no longer unproven
    assert (await read_response(newcomers[0][0]))[0] == 415
    await asyncio.sleep(1.2)
    more = await connect(server, "127.0.0.1")
    assert await closed_ones(newcomers, 0.2) == [False, True]
    another = await connect(server, "127.0.0.1")
    assert await closed_ones(idle, 0.2) == [True, False]
    assert await closed_ones([newcomers[0], more, another], 0.1) == [False, False, False]
    close_all([*idle, *newcomers, more, another])
    await asyncio.sleep(0.2)
    assert await dropped(server, "evicted") == 4


# -- WebSockets ----------------------------------------------------------------------------


async def test_connection_init_must_arrive_within_its_deadline(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The deadline is tied to the header timeout: three tenths of it (0.6 s here).
    server = await start_server("memory", header_timeout=2)
    with caplog.at_level(logging.INFO):
        reader, writer = await upgraded(server, "127.0.0.2")
        assert await close_of(reader) == (4408, "Connection initialisation timeout")
        writer.close()
        # One that sends it at once is acknowledged, and stays.
        reader, writer = await upgraded(server, "127.0.0.2")
        writer.write(ws_frame('{"type":"connection_init","payload":{}}'))
        assert await next_frame(reader) == (0x1, b'{"type":"connection_ack"}')
        await asyncio.sleep(1)
        assert not await closed(reader, 0.1)
        writer.close()
        assert await dropped(server, "init_timeout") == 1
    clean(caplog)


async def test_websockets_awaiting_connection_init_count_against_their_address(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    tables, secrets = make_tokens(reader="read")
    server = await start_server(
        "memory", header_timeout=10, max_unproven_per_address=2, auth_tokens=tables
    )
    with caplog.at_level(logging.INFO):
        # Authenticated by the upgrade request's header: proven at once, never evicted as
        # unproven (though it has not sent connection_init yet either).
        proven = await upgraded(server, "127.0.0.2", token=secrets["reader"])
        waiting = [await upgraded(server, "127.0.0.2") for _ in range(2)]
        await asyncio.sleep(1.2)  # past the grace (1 s), within the deadline (3 s)
        assert await metric(server, "features_gql_connections_unproven") == 2
        waiting.append(await upgraded(server, "127.0.0.2"))
        code, reason = await close_of(waiting[0][0])
        assert code == 4408
        assert reason.startswith("Connection initialisation timeout: too many connections")
        assert await closed_ones(waiting[1:], 0.2) == [False, False]
        assert not await closed(proven[0], 0.1)
        # The proven one goes on: connection_init is acknowledged.
        proven[1].write(ws_frame('{"type":"connection_init","payload":{}}'))
        assert await next_frame(proven[0]) == (0x1, b'{"type":"connection_ack"}')
        # So does one proven by its connection_init; it no longer counts.
        payload = json.dumps({"Authorization": f"Bearer {secrets['reader']}"})
        waiting[1][1].write(ws_frame(f'{{"type":"connection_init","payload":{payload}}}'))
        assert await next_frame(waiting[1][0]) == (0x1, b'{"type":"connection_ack"}')
        assert await metric(server, "features_gql_connections_unproven") == 1
        assert await dropped(server, "unproven_address") == 1
        close_all([proven, *waiting])
    clean(caplog)


# -- slow bodies ---------------------------------------------------------------------------


async def slow_body(server: Server, source: str, token: str | None) -> Connection:
    """A request whose headers are complete and whose body has only begun."""
    reader, writer = await connect(server, source)
    writer.write(post_head(token) + HAS[:10].encode())
    await writer.drain()
    return reader, writer


async def test_a_token_past_its_budget_of_slow_bodies_loses_its_oldest_and_others_are_served(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    tables, secrets = make_tokens(flood="read", normal="read")
    server = await start_server(
        "memory", header_timeout=10, max_bodies_per_principal=4, auth_tokens=tables
    )
    with caplog.at_level(logging.INFO):
        bodies = [await slow_body(server, "127.0.0.2", secrets["flood"]) for _ in range(4)]
        # The other token's slow body has a budget of its own, as has the same address's.
        normal_slow = await slow_body(server, "127.0.0.1", secrets["normal"])
        await asyncio.sleep(0.3)
        assert await closed_ones([*bodies, normal_slow], 0.2) == [False] * 5
        # The fifth: the oldest is answered 429, and its connection closed.
        bodies.append(await slow_body(server, "127.0.0.2", secrets["flood"]))
        status, headers, body = await read_response(bodies[0][0])
        assert (status, headers["retry-after"]) == (429, "1")
        assert json.loads(body)["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
        assert await closed(bodies[0][0], 0.5)
        assert await closed_ones(bodies[1:], 0.2) == [False] * 4

        # A flood of them: the token keeps four at most, the other token is answered.
        async def flood() -> None:
            for _ in range(40):
                bodies.append(await slow_body(server, "127.0.0.2", secrets["flood"]))

        attack = asyncio.create_task(flood())
        statuses = [await normal_request(server, secrets["normal"]) for _ in range(20)]
        await attack
        assert statuses == [200] * 20
        assert (await closed_ones(bodies, 0.2)).count(False) == 4
        assert not await closed(normal_slow[0], 0.1)
        # The normal slow body, once complete, is answered.
        normal_slow[1].write(HAS[10:].encode())
        assert (await read_response(normal_slow[0]))[0] == 200
        assert await dropped(server, "body_budget") == 41
        close_all([*bodies, normal_slow])
    clean(caplog)


async def test_anonymous_slow_bodies_are_budgeted_per_address(start_server: StartServer) -> None:
    server = await start_server("memory", header_timeout=10, max_bodies_per_principal=2)
    here = [await slow_body(server, "127.0.0.2", None) for _ in range(2)]
    there = [await slow_body(server, "127.0.0.3", None) for _ in range(2)]
    await asyncio.sleep(0.3)
    assert await closed_ones([*here, *there], 0.2) == [False] * 4
    here.append(await slow_body(server, "127.0.0.2", None))
    assert (await read_response(here[0][0]))[0] == 429
    assert await closed_ones([*here, *there], 0.2) == [True] + [False] * 4
    close_all([*here, *there])


async def test_late_bodies_of_answered_requests_close_without_a_traceback(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Answered before their body is read (here: not JSON), and asked to close: aiohttp
    # reads the rest of the body before it closes. A body timeout (3 s here, shorter
    # than aiohttp's 10 s of lingering) or an eviction used to fail that read, which
    # aiohttp logged as an "Unhandled exception" with its traceback.
    server = await start_server("memory", header_timeout=1, max_bodies_per_principal=2)
    head = post_head(close=True).replace(b"application/json", b"text/plain")

    async def answered() -> Connection:
        reader, writer = await connect(server, "127.0.0.2")
        writer.write(head + HAS[:10].encode())
        assert (await read_response(reader))[0] == 415
        return reader, writer

    with caplog.at_level(logging.INFO):
        trickling = [await answered() for _ in range(3)]  # the third evicts the first
        async with asyncio.timeout(15):
            while not all(await closed_ones(trickling, 0.1)):
                for _, writer in trickling:
                    if not writer.is_closing():
                        writer.write(b" ")
        assert await dropped(server, "body_budget") == 1
        assert await dropped(server, "body_timeout") == 2
        close_all(trickling)
        assert await normal_request(server) == 200
    clean(caplog)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "fields", {}))


async def test_a_connection_answered_before_its_body_is_in_closes_once_it_is(
    start_server: StartServer,
) -> None:
    # Kept alive, the rest of the body would pass for the next request arriving (and be
    # held to the header timeout, and counted as unproven).
    server = await start_server("memory")
    reader, writer = await connect(server, "127.0.0.2")
    writer.write(post_head().replace(b"application/json", b"text/plain") + HAS[:10].encode())
    assert (await read_response(reader))[0] == 415
    assert not await closed(reader, 0.2)  # the rest of the body is still taken in
    writer.write(HAS[10:].encode())
    assert await closed(reader, 5)
    writer.close()
    # A body all in when it is answered leaves the connection alive.
    reader, writer = await connect(server, "127.0.0.2")
    writer.write(post_head().replace(b"application/json", b"text/plain") + HAS.encode())
    assert (await read_response(reader))[0] == 415
    writer.write(post_head() + HAS.encode())
    assert (await read_response(reader))[0] == 200
    writer.close()


@pytest.mark.parametrize("path", ["/ofrep/v1/evaluate/flags/speedups", "/ofrep/v1/evaluate/flags"])
async def test_an_ofrep_body_that_times_out_or_is_evicted_is_a_4xx_without_a_traceback(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    server = await start_server("memory", header_timeout=1, max_bodies_per_principal=1)
    body = b'{"context": {"targetingKey": "1", "resourceType": "t"}}'
    head = post_head(length=len(body)).replace(b"POST /graphql", f"POST {path}".encode())

    async def trickling() -> Connection:
        reader, writer = await connect(server, "127.0.0.2")
        writer.write(head + body[:5])
        await writer.drain()
        return reader, writer

    with caplog.at_level(logging.INFO):
        first = await trickling()
        await asyncio.sleep(0.2)
        second = await trickling()  # over the budget of one: the first is evicted
        status, _, answer = await read_response(first[0])
        assert status == 429, answer
        status, _, answer = await read_response(second[0])  # 3 s later: too slow
        assert status == 408, answer
        assert json.loads(answer)["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
        close_all([first, second])
        assert await normal_request(server) == 200
    clean(caplog)
