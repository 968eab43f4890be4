"""Hostile requests against a real server, measured: how long each takes to be answered,
whether /healthz keeps answering meanwhile, and what the server's memory does.

    python -m benchmarks.attacks                  # starts `features-gql serve --store memory`
    python -m benchmarks.attacks --url http://127.0.0.1:8080 --pid 1234   # an existing one

Each attack has a time limit (--timeout, 30 s): "timeout" in the table means the server
had not answered by then. Run it against two versions to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Outcome:
    attack: str
    seconds: float | None
    status: str
    health_ms: float | None
    rss_mb: float | None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def fragment_bomb(depth: int) -> str:
    lines = ['fragment F0 on Query { hasFeature(resource: {type: "a", id: "b"}, feature: "f") }']
    lines += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, depth + 1)]
    return f"{{ ...F{depth} }}\n" + "\n".join(lines)


def aliases(n: int, field: str) -> str:
    return " ".join(f"a{i}: {field}" for i in range(n))


HAS = "hasFeature(resource: $r, feature: $f)"
VARS = {"r": {"type": "pipeline", "id": "p1"}, "f": "speedups"}


async def post(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], seconds: float
) -> str:
    async with session.post(
        f"{url}/graphql", json=payload, timeout=aiohttp.ClientTimeout(total=seconds)
    ) as response:
        body = await response.read()
        try:
            codes = {
                e.get("extensions", {}).get("code") for e in json.loads(body).get("errors", [])
            }
        except (ValueError, AttributeError):
            codes = set()
        return f"{response.status} {','.join(sorted(c for c in codes if c)) or 'ok'}"


async def health_during(
    session: aiohttp.ClientSession, url: str, attack: Awaitable[str], seconds: float
) -> tuple[str, float, float | None]:
    """Run ``attack``; meanwhile time one /healthz request sent 50 ms in."""
    started = time.perf_counter()
    task = asyncio.ensure_future(attack)
    await asyncio.sleep(0.05)
    health_ms: float | None = None
    try:
        probe_started = time.perf_counter()
        async with session.get(
            f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            await response.read()
        health_ms = (time.perf_counter() - probe_started) * 1000
    except (TimeoutError, aiohttp.ClientError):
        health_ms = None
    try:
        status = await task
    except (TimeoutError, aiohttp.ClientError) as exc:
        status = f"no answer ({type(exc).__name__})"
    return status, time.perf_counter() - started, health_ms


async def run(url: str, pid: int | None, limit: float, big_queries: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def attack(name: str, payload: Callable[[], dict[str, Any]]) -> None:
            status, seconds, health = await health_during(
                session, url, post(session, url, payload(), limit), limit
            )
            outcomes.append(
                Outcome(
                    name,
                    None if status.startswith("no answer") else seconds,
                    status,
                    health,
                    rss_mb(pid),
                )
            )
            print(f"  {name}: {status} in {seconds:.2f}s", file=sys.stderr, flush=True)
            if status.startswith("no answer"):
                await asyncio.sleep(1)

        await attack("fragment bomb, n=22", lambda: {"query": fragment_bomb(22)})
        ids = [f"id-{i}" for i in range(10_000)]
        await attack(
            "1,000 checkMatrix aliases x 10,000-id variable",
            lambda: {
                "query": "query Q($ids: [String!]!) { "
                + aliases(1000, 'checkMatrix(type: "t", ids: $ids, features: ["f"])')
                + " }",
                "variables": {"ids": ids},
            },
        )
        await attack(
            "10,000 hasFeature aliases",
            lambda: {
                "query": "query Q($r: ResourceInput!, $f: String!) { "
                + aliases(10_000, HAS)
                + " }",
                "variables": VARS,
            },
        )
        await attack(
            "4,500 repeats of one field",
            lambda: {
                "query": "query Q($r: ResourceInput!, $f: String!) { "
                + " ".join([HAS] * 4500)
                + " }",
                "variables": VARS,
            },
        )
        before = rss_mb(pid)
        started = time.perf_counter()
        statuses: dict[str, int] = {}
        for n in range(big_queries):
            # ~48,000 tokens each, all distinct.
            fields = " ".join(
                f'x{n}y{i}: resource(type: "t", id: "{n}-{i}") {{ type id }}' for i in range(4000)
            )
            try:
                status = await post(session, url, {"query": f"{{ {fields} }}"}, limit)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = f"no answer ({type(exc).__name__})"
            statuses[status] = statuses.get(status, 0) + 1
        after = rss_mb(pid)
        growth = None if before is None or after is None else after - before
        outcomes.append(
            Outcome(
                f"{big_queries} distinct ~48k-token queries (RSS growth in MB)",
                time.perf_counter() - started,
                "; ".join(f"{count}x {status}" for status, count in statuses.items()),
                None,
                growth,
            )
        )
        before = rss_mb(pid)
        started = time.perf_counter()
        statuses = {}
        for n in range(200):
            # ~9,900 tokens each: the largest that the default limits admit, all distinct.
            fields = " ".join(
                f'x{n}y{i}: resource(type: "t", id: "{n}-{i}") {{ type id }}' for i in range(98)
            )
            status = await post(session, url, {"query": f"{{ {fields} }}"}, limit)
            statuses[status] = statuses.get(status, 0) + 1
        after = rss_mb(pid)
        growth = None if before is None or after is None else after - before
        outcomes.append(
            Outcome(
                "200 distinct ~10k-token queries (RSS growth in MB)",
                time.perf_counter() - started,
                "; ".join(f"{count}x {status}" for status, count in statuses.items()),
                None,
                growth,
            )
        )
        host, port = url.removeprefix("http://").split(":")
        five_hundreds = 0
        sent = 0
        for header in ("Authorization", "X-Actor", "X-Request-ID", "Accept", "Content-Type"):
            for value in (b"\xff\xfe", b"Bearer \xc3\x28", b"\x01\x02", b"caf\xc3\xa9"):
                for path in ("/graphql", "/admin/faults"):
                    reader, writer = await asyncio.open_connection(host, int(port))
                    body = b'{"query": "{ revision }"}'
                    writer.write(
                        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n".encode()
                        + (
                            b"Content-Type: application/json\r\n"
                            if header != "Content-Type"
                            else b""
                        )
                        + header.encode()
                        + b": "
                        + value
                        + b"\r\n\r\n"
                        + body
                    )
                    await writer.drain()
                    line = await reader.readline()
                    writer.close()
                    sent += 1
                    if line.split()[1:2] and line.split()[1].startswith(b"5"):
                        five_hundreds += 1
        outcomes.append(
            Outcome(
                f"non-UTF-8 and control bytes in headers ({sent} requests)",
                None,
                f"{five_hundreds} answered 5xx",
                None,
                None,
            )
        )
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    rows = [f"{'attack':<52} {'answered in':>12} {'/healthz':>10} {'RSS MB':>8}  answer"]
    for o in outcomes:
        seconds = (
            "timeout"
            if o.seconds is None and "no answer" in o.status
            else ("" if o.seconds is None else f"{o.seconds:.2f} s")
        )
        health = "" if o.health_ms is None else f"{o.health_ms:.0f} ms"
        rss = "" if o.rss_mb is None else f"{o.rss_mb:.0f}"
        rows.append(f"{o.attack:<52} {seconds:>12} {health:>10} {rss:>8}  {o.status}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--pid", type=int, help="its process id, for RSS")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--big-queries", type=int, default=200, help="distinct ~48k-token queries to send"
    )
    args = parser.parse_args()
    process: subprocess.Popen[bytes] | None = None
    url, pid = args.url, args.pid
    if url is None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")}
        process = subprocess.Popen(
            [sys.executable, "-m", "features_gql.cli", "serve", "--store", "memory",
             "--port", str(port), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )  # fmt: skip
        url, pid = f"http://127.0.0.1:{port}", process.pid
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
    try:
        print(table(asyncio.run(run(url, pid, args.timeout, args.big_queries))))
    finally:
        if process is not None:
            process.kill()


if __name__ == "__main__":
    main()
