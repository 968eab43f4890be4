"""The live change feed under fan-out: `python -m benchmarks.feed_fanout` (see --help).

Starts `features-gql serve` in its default configuration (SQLite, in a fresh temporary
directory) on 127.0.0.1, and measures, each against a baseline taken in the same run:

- **fan-out**: N subscribers of ``featureChanges`` read while W changes are written by a
  few concurrent writers. Reported: the write rate against the rate with no subscriber,
  whether every subscriber received every change, and the service's RSS growth (during
  the run, and after every subscriber has left) beside its growth for the same writes
  with no subscriber;
- **one change to many**: the time from one write's answer until the last of N
  subscribers has received it (median and worst over a few writes);
- **stalled readers**: N subscribers from ``after: 0`` over a W-change backlog that never
  read a byte. Reported: RSS growth, the write rate meanwhile against the rate without
  them, how long until the service closed every one, and the close codes it gave.

The service runs on CPU 0 and the clients on CPU 1 where the machine has two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.run import features_gql, free_port, load_cpus, pinned, running, server_cpus

ADD = (
    "mutation Add($r: ResourceInput!, $f: String!) { addFeature(resource: $r, feature: $f) "
    "{ ... on FeatureChange { revision } } }"
)
FOLLOW = "subscription F($after: Revision) { featureChanges(after: $after) { revision } }"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Result:
    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)


async def _write(url: str, count: int, writers: int, tag: str) -> tuple[float, int]:
    """Write ``count`` changes with ``writers`` concurrent clients: (changes/s, last revision)."""
    last = 0
    connector = aiohttp.TCPConnector(limit=writers)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def writer(start: int) -> None:
            nonlocal last
            for i in range(start, count, writers):
                body = {"query": ADD, "variables": {"r": {"type": "fan", "id": f"{tag}-{i}"},
                                                    "f": "out"}}  # fmt: skip
                async with session.post(url, json=body) as response:
                    answer = await response.json()
                revision = answer["data"]["addFeature"]["revision"]
                last = max(last, revision)

        started = time.perf_counter()
        await asyncio.gather(*(writer(k) for k in range(writers)))
        return count / (time.perf_counter() - started), last


class Subscriber:
    """One ``featureChanges`` subscriber that reads (and counts) everything it is sent."""

    def __init__(self, session: aiohttp.ClientSession, url: str, after: int | None) -> None:
        self.session, self.url, self.after = session, url, after
        self.last = 0
        self.received = 0
        self.ready = asyncio.Event()
        self.seen_by: Callable[[int], None] | None = None

    async def run(self) -> None:
        async with self.session.ws_connect(
            self.url.replace("http://", "ws://"), protocols=["graphql-transport-ws"],
            max_msg_size=0,
        ) as ws:  # fmt: skip
            await ws.send_json({"type": "connection_init", "payload": {}})
            await ws.receive_json()
            payload = {"query": FOLLOW, "variables": {"after": self.after}}
            await ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
            self.ready.set()
            async for message in ws:
                data = json.loads(message.data)
                if data.get("type") == "ping":
                    # The protocol asks for a pong: the service closes who does not answer.
                    await ws.send_json({"type": "pong"})
                    continue
                if data.get("type") != "next":
                    continue
                revision = data["payload"]["data"]["featureChanges"]["revision"]
                self.last = revision
                self.received += 1
                if self.seen_by is not None:
                    self.seen_by(revision)


async def _subscribed(url: str, count: int, after: int | None) -> tuple[Any, list[Subscriber]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    subscribers = [Subscriber(session, url, after) for _ in range(count)]
    tasks = [asyncio.create_task(s.run()) for s in subscribers]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 60)
    await asyncio.sleep(0.5)  # every subscription reaches the feed

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()

    return close, subscribers


async def fan_out(url: str, pid: int, subscribers: int, writes: int, writers: int) -> Result:
    # Warm-up, then the baseline: the same writes with no subscriber.
    await _write(url, 500, writers, f"warm-{uuid.uuid4().hex[:6]}")
    start = rss_mb(pid)
    baseline, _ = await _write(url, writes, writers, f"base-{uuid.uuid4().hex[:6]}")
    before = rss_mb(pid)
    close, subs = await _subscribed(url, subscribers, None)
    peak = before
    rate, last = await _write(url, writes, writers, f"fan-{uuid.uuid4().hex[:6]}")
    deadline = time.monotonic() + 120
    while any(s.last < last for s in subs) and time.monotonic() < deadline:
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.1)
    peak = max(peak, rss_mb(pid))
    complete = sum(1 for s in subs if s.received == writes and s.last == last)
    await close()
    await asyncio.sleep(1.0)
    after = rss_mb(pid)
    return Result(
        f"{subscribers} subscribers x {writes} changes",
        {
            "writes_per_s_without": round(baseline),
            "writes_per_s_with": round(rate),
            "write_ratio": round(rate / baseline, 2),
            "subscribers_with_every_change": f"{complete}/{subscribers}",
            "rss_before_mb": round(before, 1),
            "rss_growth_without_subscribers_mb": round(before - start, 1),
            "rss_growth_peak_mb": round(peak - before, 1),
            "rss_growth_after_leaving_mb": round(after - before, 1),
        },
    )


class _Arrival:
    """Counts the subscribers that have received one revision."""

    def __init__(self, subscribers: list[Subscriber]) -> None:
        self.subscribers = subscribers
        self.target = -1
        self.reached = 0
        self.done = asyncio.Event()

    def expect(self, target: int) -> None:
        self.target = target
        # Those that got it before the write's answer was read count too.
        self.reached = sum(1 for s in self.subscribers if s.last >= target)
        if self.reached >= len(self.subscribers):
            self.done.set()

    def seen(self, revision: int) -> None:
        if revision == self.target:
            self.reached += 1
            if self.reached >= len(self.subscribers):
                self.done.set()


async def one_to_many(url: str, subscribers: int, samples: int) -> Result:
    close, subs = await _subscribed(url, subscribers, None)
    delays: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(samples):
                arrival = _Arrival(subs)
                for s in subs:
                    s.seen_by = arrival.seen
                body = {"query": ADD, "variables": {"r": {"type": "fan", "id": f"one-{i}"},
                                                    "f": uuid.uuid4().hex[:8]}}  # fmt: skip
                started = time.perf_counter()
                async with session.post(url, json=body) as response:
                    arrival.expect((await response.json())["data"]["addFeature"]["revision"])
                await asyncio.wait_for(arrival.done.wait(), 30)
                delays.append(time.perf_counter() - started)
                await asyncio.sleep(0.2)
    finally:
        await close()
    return Result(
        f"one change to {subscribers} subscribers",
        {
            "median_ms": round(statistics.median(delays) * 1000, 1),
            "worst_ms": round(max(delays) * 1000, 1),
            "samples": samples,
        },
    )


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"no metric {name}")


async def stalled(url: str, pid: int, subscribers: int, backlog: int, writers: int) -> Result:
    await _write(url, backlog, writers, f"backlog-{uuid.uuid4().hex[:6]}")
    baseline, _ = await _write(url, 2000, writers, f"base-{uuid.uuid4().hex[:6]}")
    before = rss_mb(pid)
    ws_url = url.replace("http://", "ws://")
    metrics_url = url.replace("/graphql", "/metrics")
    codes: Counter[str] = Counter()
    subscribed = asyncio.Event()
    count = 0

    async def never_reads(session: aiohttp.ClientSession) -> None:
        nonlocal count
        # It stops reading once subscribed: the service's writes back up into the socket,
        # then into the service. After a minute it reads again, to see how it was closed.
        async with session.ws_connect(ws_url, protocols=["graphql-transport-ws"]) as ws:
            await ws.send_json({"type": "connection_init", "payload": {}})
            await ws.receive_json()
            payload = {"query": FOLLOW, "variables": {"after": 0}}
            await ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
            transport = ws._response.connection.transport  # type: ignore[union-attr]
            assert transport is not None
            transport.pause_reading()
            count += 1
            if count == subscribers:
                subscribed.set()
            await asyncio.sleep(65)
            transport.resume_reading()
            # receive(), not `async for`: that ends at the close without showing it.
            while True:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
            reason = str(message.extra or "") if message.type == aiohttp.WSMsgType.CLOSE else ""
            # The reason without its revision: "subscriber too slow; resume with after".
            codes[f"{ws.close_code} {reason.partition('=')[0]}".strip()] += 1

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    tasks = [asyncio.create_task(never_reads(session)) for _ in range(subscribers)]
    await asyncio.wait_for(subscribed.wait(), 60)
    started = time.monotonic()
    peak = max(before, rss_mb(pid))
    rate, _ = await _write(url, 2000, writers, f"during-{uuid.uuid4().hex[:6]}")
    closed_after: float | None = None
    dropped = 0.0
    async with aiohttp.ClientSession() as probe:
        while time.monotonic() - started < 62:
            peak = max(peak, rss_mb(pid))
            async with probe.get(metrics_url) as response:
                text = await response.text()
            dropped = _metric(text, "features_gql_subscriptions_dropped_total")
            if closed_after is None and _metric(text, "features_gql_subscriptions") == 0:
                closed_after = time.monotonic() - started
            await asyncio.sleep(0.5)
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    return Result(
        f"{subscribers} stalled subscribers from after: 0 over {backlog} changes",
        {
            "rss_growth_peak_mb": round(peak - before, 1),
            "writes_per_s_without": round(baseline),
            "writes_per_s_with": round(rate),
            "write_ratio": round(rate / baseline, 2),
            "closed_as_too_slow": int(dropped),
            "all_closed_after_s": None if closed_after is None else round(closed_after, 1),
            "close_seen_by_clients_reading_after_65_s": dict(codes),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="*", default=[20, 1000])
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--skip-stalled", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    results: list[Result] = []

    def step(scenario: Callable[[str, int], Awaitable[Result]]) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}/graphql"
        with tempfile.TemporaryDirectory() as data:
            store = f"sqlite://{Path(data) / 'features.db'}"
            command = pinned(features_gql(port, store=store), server_cpus())
            log = Path(data) / "service.log"
            result = _measure(command, port, url, scenario, log)
            # What the service logged meanwhile: tracebacks are bugs, and the volume counts.
            text = log.read_text(encoding="utf-8", errors="replace")
            result.figures["log_bytes"] = len(text)
            result.figures["tracebacks_logged"] = text.count("Traceback")
        print(f"{result.scenario}: {json.dumps(result.figures)}", flush=True)
        results.append(result)

    def _measure(
        command: list[str],
        port: int,
        url: str,
        scenario: Callable[[str, int], Awaitable[Result]],
        log: Path,
    ) -> Result:
        with running(command, port, log_to=log) as process:
            if load_cpus():
                os.sched_setaffinity(0, load_cpus() or [])
            return asyncio.run(scenario(url, process.pid))

    for n in args.subscribers:
        step(lambda url, pid, n=n: fan_out(url, pid, n, args.writes, args.writers))
    for n in args.subscribers:
        step(lambda url, pid, n=n: one_to_many(url, n, 20))
    if not args.skip_stalled:
        step(lambda url, pid: stalled(url, pid, args.stalled, args.writes, args.writers))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    sys.exit(main())
