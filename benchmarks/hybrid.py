"""The hybrid deployment shapes, measured: `python -m benchmarks.hybrid` (see --help).

- **Propagation, primary -> edge**: a primary and an edge (`serve --upstream`), each a
  real process on 127.0.0.1 with its own SQLite file. Writes at the primary, spaced at
  random; each is timed from just before the write is sent until the edge's own
  subscription delivers it (so it is in the edge's copy). Baseline, in the same run: a
  client polling the primary's change log every second, as replicas without a feed do.
- **Edge hasFeature throughput** against the raw aiohttp handler (and the primary).
- **LocalReplica at 1M assignments**: bytes per assignment and load time from a SQLite
  file, against a set of (type, id, feature) tuples (the former representation) and a
  replay of the change log (the former way to load), and a check against a dict lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.run import (
    ADD_QUERY,
    HAS_QUERY,
    HERE,
    PIPELINE,
    Report,
    Row,
    body,
    cpus,
    features_gql,
    format_table,
    free_port,
    load_cpus,
    per_call_ns,
    pinned,
    post,
    python_load,
    raw_server,
    running,
    server_cpus,
    wrk_load,
)

FOLLOW = "subscription { featureChanges { revision feature resource { id } } }"
CHANGES = "query ($after: Revision!) { changes(after: $after, first: 1000) { revision feature } }"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def edge_command(port: int, upstream: str, store: str) -> list[str]:
    return [
        sys.executable, "-m", "features_gql.cli", "serve", "--port", str(port),
        "--store", store, "--upstream", upstream,
    ]  # fmt: skip


# -- propagation -------------------------------------------------------------------------


async def _propagation(primary: str, edge: str, writes: int) -> tuple[list[float], list[float]]:
    """Seconds from sending each write to the primary until it reaches the edge's
    subscribers, and until a 1 s polling client of the primary sees it."""
    sent: dict[str, float] = {}
    at_edge: dict[str, float] = {}
    polled: dict[str, float] = {}
    done = asyncio.Event()
    async with aiohttp.ClientSession() as session:

        async def follow_edge() -> None:
            async with session.ws_connect(
                edge.replace("http://", "ws://"), protocols=["graphql-transport-ws"]
            ) as ws:
                await ws.send_json({"type": "connection_init", "payload": {}})
                await ws.receive_json()
                await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": FOLLOW}})
                subscribed.set()
                async for message in ws:
                    data = json.loads(message.data)
                    if data.get("type") == "ping":
                        await ws.send_json({"type": "pong"})
                    elif data.get("type") == "next":
                        feature = data["payload"]["data"]["featureChanges"]["feature"]
                        at_edge.setdefault(feature, time.perf_counter())
                        if len(at_edge) == writes:
                            return

        async def poll_primary() -> None:
            after = (await _post(session, primary, "{ revision }"))["revision"]
            while not done.is_set():
                await asyncio.sleep(1.0)
                for change in (await _post(session, primary, CHANGES, {"after": after}))["changes"]:
                    polled.setdefault(change["feature"], time.perf_counter())
                    after = change["revision"]

        subscribed = asyncio.Event()
        edge_task = asyncio.create_task(follow_edge())
        poll_task = asyncio.create_task(poll_primary())
        await asyncio.wait_for(subscribed.wait(), 10)
        await asyncio.sleep(0.5)
        run = uuid.uuid4().hex[:8]
        for i in range(writes):
            feature = f"p{run}-{i}"
            sent[feature] = time.perf_counter()
            await _post(
                session, primary, ADD_QUERY, {"r": {"type": "bench", "id": "prop"}, "f": feature}
            )
            await asyncio.sleep(random.uniform(0.01, 0.04))
        await asyncio.wait_for(edge_task, 30)
        await asyncio.sleep(2.5)  # the polling client's next polls see the last writes
        done.set()
        poll_task.cancel()
    return (
        [at_edge[f] - sent[f] for f in sent],
        [polled[f] - sent[f] for f in sent],
    )


async def _post(
    session: aiohttp.ClientSession, url: str, query: str, variables: dict[str, Any] | None = None
) -> Any:
    async with session.post(url, json={"query": query, "variables": variables or {}}) as r:
        answer = await r.json()
    assert "errors" not in answer, answer
    return answer["data"]


def propagation_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    rows: list[Row] = []
    primary_port, edge_port = free_port(), free_port()
    one = server_cpus(1)
    primary_cmd = features_gql(primary_port, store=f"sqlite://{tmp}/primary.db")
    edge_cmd = edge_command(
        edge_port, f"http://127.0.0.1:{primary_port}/graphql", f"sqlite://{tmp}/edge.db"
    )
    with (
        running(pinned(primary_cmd, one), primary_port),
        running(pinned(edge_cmd, one), edge_port, health="/readyz"),
    ):
        edge_ms, poll_ms = asyncio.run(
            _propagation(
                f"http://127.0.0.1:{primary_port}/graphql",
                f"http://127.0.0.1:{edge_port}/graphql",
                args.writes,
            )
        )
    edge_ms = [s * 1000 for s in edge_ms]
    poll_ms = [s * 1000 for s in poll_ms]
    poll50 = percentile(poll_ms, 0.5)
    rows.append(
        Row(
            "propagation: client polling the primary every 1 s (baseline)",
            "ms",
            poll50,
            poll50,
            percentile(poll_ms, 0.99),
            "itself",
            note=f"{len(poll_ms)} writes",
        )
    )
    edge50 = percentile(edge_ms, 0.5)
    rows.append(
        Row(
            "propagation: write at the primary -> in the edge's copy",
            "ms",
            edge50,
            edge50,
            percentile(edge_ms, 0.99),
            "1 s polling",
            edge50 / poll50,
            "p99 ≤ 50 ms",
            note=f"{len(edge_ms)} writes",
        )
    )
    return rows


# -- edge throughput ---------------------------------------------------------------------


def throughput_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    use_wrk = not args.python_load and Path("/usr/bin/wrk").exists()
    load = wrk_load if use_wrk else python_load
    rows: list[Row] = []
    raw_port, primary_port, edge_port = free_port(), free_port(), free_port()
    one, rest = server_cpus(1), load_cpus(1)
    has_body = body(HAS_QUERY, {"r": PIPELINE, "f": "speedups"})
    primary_cmd = features_gql(primary_port, store=f"sqlite://{tmp}/tp-primary.db")
    edge_cmd = edge_command(
        edge_port, f"http://127.0.0.1:{primary_port}/graphql", f"sqlite://{tmp}/tp-edge.db"
    )
    with running(pinned(raw_server(raw_port), one), raw_port):
        rate, p50, p99 = load(
            f"http://127.0.0.1:{raw_port}/check", [has_body], args.duration, args.connections, rest
        )
    rows.append(Row("HTTP: raw aiohttp handler (baseline)", "req/s", rate, p50, p99, "itself"))
    raw_rate = rate
    with running(pinned(primary_cmd, one), primary_port):
        primary = f"http://127.0.0.1:{primary_port}/graphql"
        post(primary, {"query": ADD_QUERY, "variables": {"r": PIPELINE, "f": "speedups"}})
        rate, p50, p99 = load(primary, [has_body], args.duration, args.connections, rest)
        rows.append(
            Row("HTTP: hasFeature, primary on sqlite", "req/s", rate, p50, p99, "raw handler",
                rate / raw_rate)
        )  # fmt: skip
        with running(pinned(edge_cmd, one), edge_port, health="/readyz"):
            edge = f"http://127.0.0.1:{edge_port}/graphql"
            answer = post(edge, json.loads(has_body))
            assert answer["data"]["hasFeature"] is True, answer
            rate, p50, p99 = load(edge, [has_body], args.duration, args.connections, rest)
            rows.append(
                Row("HTTP: hasFeature, edge (copy on sqlite)", "req/s", rate, p50, p99,
                    "raw handler", rate / raw_rate, "≥ 0.3x")
            )  # fmt: skip
    return rows


# -- LocalReplica at scale ---------------------------------------------------------------


def populate(path: Path, count: int) -> list[tuple[str, str, str]]:
    """A SQLite store file with ``count`` assignments (uuid ids, a few types and features)
    and a change log holding one add per assignment; the keys, for checks."""
    from features_gql_plugins.sqlite_store import SQLiteStore

    async def create() -> None:
        store = SQLiteStore(str(path))
        await store.open()
        await store.close()

    asyncio.run(create())
    types = ("pipeline", "project", "account", "cluster")
    features = ("speedups", "beta", "new-ui", "fast-path", "dark-mode", "v2", "canary", "x")
    keys = [
        (types[i % 4], str(uuid.UUID(int=random.getrandbits(128))), features[i % 8])
        for i in range(count)
    ]
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO assignments VALUES (?, ?, ?)", keys)
        conn.executemany(
            "INSERT INTO changes (op, resource_type, resource_id, feature, at, actor) "
            "VALUES ('add', ?, ?, ?, ?, NULL)",
            ((t, i, f, now) for t, i, f in keys),
        )
    return keys


async def _load(path: Path, *, traced: bool, replay: bool = False) -> tuple[float, int, Any]:
    from features_gql import FeaturesAPI
    from features_gql.replica import LocalReplica
    from features_gql_plugins.sqlite_store import SQLiteStore

    store = SQLiteStore(str(path))
    await store.open()
    api = FeaturesAPI(store, deadline=60)
    replica = LocalReplica(api, interval=3600)
    gc.collect()
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    if replay:
        await replica.refresh()  # the former way: every change since revision 0
    else:
        await replica.load()
    seconds = time.perf_counter() - started
    held = 0
    if traced:
        gc.collect()
        # What the copy holds: the set and its fingerprints.
        snapshot = tracemalloc.take_snapshot()
        held = sum(
            stat.size
            for stat in snapshot.statistics("filename")
            if stat.traceback[0].filename.endswith("replica.py")
        )
        tracemalloc.stop()
    await store.close()
    return seconds, held, replica


def replica_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    count = args.assignments
    path = tmp / "replica.db"
    keys = populate(path, count)
    rows: list[Row] = []

    # The former representation, a set of the tuples, as the baseline for memory.
    gc.collect()
    tracemalloc.start()
    tuples = {(t, i, f) for t, i, f in keys}
    tuple_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The strings were already held by `keys`: count them as a copy loaded from a store
    # would hold them (the tuples and their three strings each).
    strings = sum(sys.getsizeof(i) for _, i, _ in keys)
    tuple_per = (tuple_bytes + strings) / count
    rows.append(
        Row(f"LocalReplica memory at {count:,}: set of tuples (former, baseline)",
            "B/assignment", tuple_per, baseline="itself")
    )  # fmt: skip
    _, held, _ = asyncio.run(_load(path, traced=True))
    rows.append(
        Row(f"LocalReplica memory at {count:,}: fingerprints", "B/assignment", held / count,
            baseline="set of tuples", ratio=held / count / tuple_per, target="≤ 100 B")
    )  # fmt: skip
    del tuples

    if not args.quick:
        replay_s, _, _ = asyncio.run(_load(path, traced=False, replay=True))
        rows.append(
            Row(f"LocalReplica load at {count:,}: replaying the change log (former, baseline)",
                "s", replay_s, baseline="itself")
        )  # fmt: skip
    load_s, _, replica = asyncio.run(_load(path, traced=False))
    rows.append(
        Row(f"LocalReplica load at {count:,}: snapshot pages", "s", load_s,
            baseline="" if args.quick else "replay",
            ratio=None if args.quick else load_s / replay_s)
    )  # fmt: skip
    assert len(replica) == count

    probe = keys[count // 2]
    flags = {probe}
    number = 200_000 if args.quick else 2_000_000
    dict_ns = per_call_ns(lambda: probe in flags, number)
    rows.append(Row("in-process: dict lookup (baseline)", "µs", dict_ns / 1000, baseline="itself"))
    has = replica.has
    t, i, f = probe
    resource = (t, i)
    assert has(resource, f)
    ns = per_call_ns(lambda: has(resource, f), number)
    rows.append(
        Row(f"in-process: LocalReplica.has at {count:,}", "µs", ns / 1000,
            baseline="dict lookup", ratio=ns / dict_ns, target="≤ 3x")
    )  # fmt: skip
    return rows


def format_rows(report: Report) -> str:
    table = format_table(report)
    return table.replace("B/assignment", "B/asg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hybrid", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny runs: does it work?")
    parser.add_argument("--writes", type=int, default=200, help="writes timed (200)")
    parser.add_argument("--assignments", type=int, default=1_000_000, help="(1,000,000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load (5)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--python-load", action="store_true", help="no wrk")
    parser.add_argument(
        "--skip", action="append", default=[], choices=("propagation", "throughput", "replica")
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "hybrid.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.writes = min(args.writes, 20)
        args.assignments = min(args.assignments, 20_000)
        args.duration = min(args.duration, 1.0)
    report = Report(
        machine={"python": sys.version.split()[0], "cpus": len(cpus())},
        load_generator="python (aiohttp client)" if args.python_load else "wrk",
        duration_s=args.duration,
        connections=args.connections,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if "propagation" not in args.skip:
            report.rows += propagation_rows(args, Path(tmp))
        if "throughput" not in args.skip:
            report.rows += throughput_rows(args, Path(tmp))
        if "replica" not in args.skip:
            report.rows += replica_rows(args, Path(tmp))
    print(format_rows(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
