"""Cross-process propagation on PostgreSQL: `python -m benchmarks.postgres_propagation`.

Two `features-gql serve` processes on one PostgreSQL database (started here, unless
``POSTGRES_URL`` names one). A ``featureChanges`` subscriber of the first receives the
changes written through the second: the time from a write's answer until the subscriber
has it is how long a change takes to cross processes (PostgreSQL's ``NOTIFY`` wakes the
first process's feed; without it, the feed's 50 ms poll would). Baseline, in the same run:
the same writes through the first process itself, which wakes its own feed in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid

import aiohttp

from benchmarks.hybrid import percentile
from benchmarks.run import features_gql, free_port, running
from benchmarks.stores import postgres
from tests.postgres_server import unique_schema, with_schema

ADD = (
    "mutation Add($r: ResourceInput!, $f: String!) { addFeature(resource: $r, feature: $f) "
    "{ ... on FeatureChange { revision } } }"
)
FOLLOW = "subscription { featureChanges { revision } }"


async def _delays(subscribed_to: str, written_to: str, writes: int) -> list[float]:
    """Seconds from each write's answer (through ``written_to``) until the subscriber of
    ``subscribed_to`` has its change."""
    arrived: dict[int, float] = {}
    waiting: dict[int, asyncio.Event] = {}
    delays: list[float] = []
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            subscribed_to.replace("http://", "ws://"), protocols=["graphql-transport-ws"]
        )
        await ws.send_json({"type": "connection_init", "payload": {}})
        await ws.receive_json()
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": FOLLOW}})

        async def follow() -> None:
            async for message in ws:
                data = json.loads(message.data)
                if data.get("type") == "ping":
                    await ws.send_json({"type": "pong"})
                elif data.get("type") == "next":
                    revision = data["payload"]["data"]["featureChanges"]["revision"]
                    arrived[revision] = time.perf_counter()
                    if revision in waiting:
                        waiting[revision].set()

        reader = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        tag = uuid.uuid4().hex[:8]
        for i in range(writes):
            body = {"query": ADD, "variables": {"r": {"type": "prop", "id": f"{tag}-{i}"},
                                                "f": "x"}}  # fmt: skip
            async with session.post(written_to, json=body) as response:
                revision = (await response.json())["data"]["addFeature"]["revision"]
            answered = time.perf_counter()
            if revision not in arrived:
                waiting[revision] = asyncio.Event()
                await asyncio.wait_for(waiting[revision].wait(), 10)
            delays.append(max(0.0, arrived[revision] - answered))
            await asyncio.sleep(random.uniform(0.01, 0.03))
        reader.cancel()
        await ws.close()
    return delays


def _summary(delays: list[float]) -> dict[str, float]:
    ms = [d * 1000 for d in delays]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    with postgres() as (url, what):
        store = with_schema(url, unique_schema("prop"))
        ports = [free_port(), free_port()]
        with (
            running(features_gql(ports[0], store=store), ports[0]),
            running(features_gql(ports[1], store=store), ports[1]),
        ):
            first, second = (f"http://127.0.0.1:{port}/graphql" for port in ports)
            local = asyncio.run(_delays(first, first, args.writes))
            across = asyncio.run(_delays(first, second, args.writes))
        print(f"PostgreSQL: {what}; {args.writes} writes each")
        print(f"  written through the subscriber's own process: {json.dumps(_summary(local))}")
        print(f"  written through another process:              {json.dumps(_summary(across))}")


if __name__ == "__main__":
    sys.exit(main())
