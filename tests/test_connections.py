"""Connection limits against a real `features-gql serve` process: slow clients beyond
the open-file limit, the header timeout, max_connections at and past its limit, the
open-file limit raised at start-up, and out-of-descriptor errors logged as counts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from typing import Any

import pytest

from features_gql.http.connections import DEFAULT_MAX_CONNECTIONS, connection_budget
from tests.real_server import ServeProcess, serve

pytestmark = pytest.mark.slow

DROPPED = "features_gql_connections_dropped_total"
HAS = json.dumps({"query": '{ hasFeature(resource: {type: "a", id: "b"}, feature: "f") }'})


def graphql_post(connection: str = "close") -> bytes:
    return (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(HAS)}\r\nConnection: {connection}\r\n\r\n{HAS}"
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def normal_request(port: int, request: bytes | None = None) -> int:
    """One request (by default a GraphQL query) on a fresh connection; its status, or 0
    if no answer came within 10 s."""
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request or graphql_post())
            status, _, _ = await read_response(reader)
            writer.close()
            return status
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return 0


async def slow_client(port: int, stop: asyncio.Event, interval: float) -> None:
    """Sends a request's headers a line at a time, never finishing; reconnects when closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(interval)
            continue
        try:
            writer.write(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            line = 0
            while not stop.is_set() and not reader.at_eof():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                line += 1
                writer.write(f"X-Slow-{line}: aaaaaaaaaa\r\n".encode())
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


async def closed(reader: asyncio.StreamReader, wait: float = 1.0) -> bool:
    """Whether the server closed this connection (read to its end) within ``wait`` s."""
    try:
        async with asyncio.timeout(wait):
            await reader.read()
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def closed_ones(
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> list[bool]:
    return list(await asyncio.gather(*(closed(reader, 0.5) for reader, _ in connections)))


def metric(server: ServeProcess, name: str, labels: str = "") -> float:
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def connection_log(server: ServeProcess) -> list[dict[str, Any]]:
    return [line for line in server.log_lines() if line.get("logger") == "features_gql.connections"]


async def test_slow_clients_beyond_the_open_file_limit_leave_normal_requests_answered() -> None:
    # 300 slow clients against 256 descriptors: before the limits, accept() failed from
    # then on, no normal request was answered, and every failure logged a traceback.
    with serve(env={"FEATURES_GQL_HEADER_TIMEOUT_SECONDS": "1"}, open_files=(256, 256)) as server:
        stop = asyncio.Event()
        flood = [asyncio.create_task(slow_client(server.port, stop, 0.25)) for _ in range(300)]
        await asyncio.sleep(1)
        statuses = []
        for _ in range(25):  # spread over more than one header timeout
            statuses.append(await normal_request(server.port))
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*flood)
        dropped = metric(server, DROPPED, '{reason="evicted"}')
        text = server.stop()
    assert statuses == [200] * 25
    assert dropped > 0  # the flood really filled the connection budget
    assert "Traceback" not in text
    assert "Too many open files" not in text
    # One line per kind of event (evicted, header_timeout, accept...) per 10 s at most.
    warnings = [line for line in connection_log(server) if line["level"] == "WARNING"]
    assert 1 <= len(warnings) <= 8, warnings
    assert sum(line.get("count", 0) for line in warnings) > len(warnings)


async def test_headers_must_arrive_within_the_header_timeout() -> None:
    with serve(env={"FEATURES_GQL_HEADER_TIMEOUT_SECONDS": "1"}) as server:
        started_reader, started = await asyncio.open_connection("127.0.0.1", server.port)
        started.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
        trickle_reader, trickle = await asyncio.open_connection("127.0.0.1", server.port)
        trickle.write(b"GET /healthz HTTP/1.1\r\n")
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", server.port)
        idle.write(graphql_post("keep-alive"))
        assert (await read_response(idle_reader))[0] == 200

        async with asyncio.timeout(10):
            # A request started but not finished in time: a JSON 408, then the close.
            status, headers, body = await read_response(started_reader)
            assert status == 408
            assert headers["server"] == "features-gql"
            assert headers["connection"] == "close"
            assert json.loads(body)["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
            assert await started_reader.read() == b""
            # A connection that never sent a byte: closed without a word.
            assert await silent_reader.read() == b""
            # Sending a line now and then does not extend the deadline.
            while not await closed(trickle_reader, 0.2):
                trickle.write(b"X-More: yes\r\n")
        # Between requests a keep-alive connection is idle, not late: it still works.
        await asyncio.sleep(2)
        idle.write(graphql_post("close"))
        assert (await read_response(idle_reader))[0] == 200
        for writer in (started, silent, trickle, idle):
            writer.close()
        dropped = metric(
            server, "features_gql_connections_dropped_total", '{reason="header_timeout"}'
        )
    assert dropped == 3


async def test_a_request_body_must_arrive_within_three_header_timeouts() -> None:
    head = (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(HAS)}\r\n\r\n"
    ).encode()
    with serve(env={"FEATURES_GQL_HEADER_TIMEOUT_SECONDS": "1"}) as server:
        # A body that trickles in within the bound is answered...
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head)
        for piece in (HAS[:10], HAS[10:20], HAS[20:]):
            await asyncio.sleep(0.5)
            writer.write(piece.encode())
        assert (await read_response(reader))[0] == 200
        writer.close()
        # ...one that is still trickling past it gets a JSON 408, and the connection closes.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head + HAS[:10].encode())
        answer = asyncio.ensure_future(read_response(reader))
        async with asyncio.timeout(20):
            while not answer.done():
                writer.write(b" ")
                await asyncio.sleep(0.3)
        status, _, body = answer.result()
        assert status == 408
        error = json.loads(body)["errors"][0]
        assert error["extensions"]["code"] == "REQUEST_TIMEOUT"
        assert error["message"] == "The request body did not arrive within 3 s."
        assert await closed(reader)
        writer.close()
        # Clients that give up halfway through their body are no error of the service's.
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(head + HAS[:10].encode())
            await asyncio.sleep(0.05)
            writer.close()
        await asyncio.sleep(0.5)
        assert await normal_request(server.port) == 200
        timed_out = metric(server, DROPPED, '{reason="body_timeout"}')
        text = server.stop()
    assert timed_out == 1
    assert "Traceback" not in text
    assert [line for line in server.log_lines() if line["level"] == "ERROR"] == []


async def test_at_max_connections_idle_then_slow_connections_make_room_and_busy_ones_do_not() -> (
    None
):
    env = {
        "FEATURES_GQL_MAX_CONNECTIONS": "4",
        "FEATURES_GQL_DEADLINE_SECONDS": "10",
        "FEATURES_GQL_HEADER_TIMEOUT_SECONDS": "30",
    }
    with serve("--latency", "delay_ms=1500", env=env) as server:
        port = server.port
        # Four busy connections (the limit): a fifth is refused with a JSON 503.
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        for _, writer in kept:
            writer.write(graphql_post("keep-alive"))
        await asyncio.sleep(0.5)  # the four requests are waiting on the slow store
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, body = await read_response(reader)
        writer.close()
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["server"] == "features-gql"
        assert json.loads(body)["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        for reader, _ in kept:
            assert (await read_response(reader))[0] == 200

        # The four are idle keep-alive connections now: a new one takes one's place.
        newcomer = await asyncio.open_connection("127.0.0.1", port)
        newcomer[1].write(graphql_post("keep-alive"))
        assert (await read_response(newcomer[0]))[0] == 200
        assert (await closed_ones(kept)).count(True) == 1
        for _, writer in [*kept, newcomer]:
            writer.close()
        await asyncio.sleep(0.5)

        async def slow_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            return reader, writer

        # Three connections sending headers slowly, then one idle: the idle one makes
        # room, though the slow ones have been there longer...
        slow = [await slow_one() for _ in range(3)]
        idle = await asyncio.open_connection("127.0.0.1", port)
        idle[1].write(graphql_post("keep-alive"))
        assert (await read_response(idle[0]))[0] == 200
        assert await normal_request(port, HEALTHZ) == 200
        assert await closed(idle[0])
        assert not await closed(slow[0][0], 0.5)
        # ...and with no idle one left, the connection that has been arriving the longest.
        slow.append(await slow_one())
        assert await normal_request(port, HEALTHZ) == 200
        assert await closed_ones(slow) == [True, False, False, False]
        for _, writer in slow:
            writer.close()
        evicted = metric(server, DROPPED, '{reason="evicted"}')
        refused = metric(server, DROPPED, '{reason="refused"}')
    assert (evicted, refused) == (3, 1)


@pytest.mark.parametrize(
    ("configured", "soft_limit", "budget"),
    [
        (None, 1 << 20, DEFAULT_MAX_CONNECTIONS),
        (None, 1024, 768),  # a quarter kept for the store, the logs, accept bursts
        (768, 1024, 768),
        (769, 1024, 768),
        (1, 1024, 1),
        (None, 64, 48),
        (None, 4096, 3584),  # at most 512 kept
        (10, 16, 1),
    ],
)
def test_connection_budget(configured: int | None, soft_limit: int, budget: int) -> None:
    assert connection_budget(configured, soft_limit) == budget


def test_a_max_connections_past_the_open_file_limit_is_lowered_and_says_so() -> None:
    env = {"FEATURES_GQL_MAX_CONNECTIONS": "5000"}
    with serve(env=env, open_files=(1024, 1024)) as server:
        server.stop()
    lines = {line["message"]: line for line in connection_log(server)}
    assert lines["connection limits"]["max_connections"] == 768
    lowered = lines["max_connections lowered to fit the open-file limit"]
    assert (lowered["configured"], lowered["open_file_limit"]) == (5000, 1024)


@pytest.mark.skipif(sys.platform != "linux", reason="reads the limits with prlimit (Linux)")
def test_the_open_file_limit_is_raised_to_the_hard_limit_at_start_up() -> None:
    with serve(open_files=(256, 1024)) as server:
        assert server.open_file_limits() == (1024, 1024)
    with serve(open_files=(256, 256)) as server:
        assert server.open_file_limits() == (256, 256)


async def test_running_out_of_descriptors_is_one_counted_line_not_a_traceback_each() -> None:
    with serve(env={"FEATURES_GQL_HEADER_TIMEOUT_SECONDS": "1"}, open_files=(64, 64)) as server:
        # Connections queue in the kernel while the server is stopped; when it resumes it
        # accepts them in one burst, past its 64 descriptors.
        server.process.send_signal(signal.SIGSTOP)
        try:
            queued = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(100)]
        finally:
            server.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(3)  # accept retries, header timeouts
        for _, writer in queued:
            writer.close()
        await asyncio.sleep(1.5)
        assert await normal_request(server.port) == 200
        failed = metric(
            server, "features_gql_connections_dropped_total", '{reason="accept_failed"}'
        )
        text = server.stop()
    assert failed > 1
    assert "Traceback" not in text
    lines = [line for line in connection_log(server) if "file descriptors" in line["message"]]
    assert 1 <= len(lines) <= 2, lines
    assert sum(line["count"] for line in lines) == failed
