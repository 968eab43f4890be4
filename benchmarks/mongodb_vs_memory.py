"""Per-operation latency of the mongodb store against the memory store, in one run.

    python -m benchmarks.mongodb_vs_memory [--driver pymongo|motor|both] [--quick]

Measures ``has``, ``add`` (each one a change) and ``check_many`` of 1000 items through
the in-process ``FeaturesAPI`` (validation, deadline and instrumentation included,
no event sink), one call at a time, and prints p50/p99 latency, calls per second and
the ratio of each p50 to the memory store's. ``check_many(1000)`` asks about 1000
resources of which about half have the feature, ``check_many(1000)*`` about 1000 that
have none. The MongoDB server is the embedded SecantusDB, started here on 127.0.0.1 in
a process of its own, unless ``MONGODB_URL`` names one; the output says which, with
the version it reports.

Know the embedded server when reading its numbers: it is a MongoDB-compatible
server written in Python, not mongod. Its index finds the 1000 ids quickly (see
``check_many(1000)*``), but it then re-checks each document found against the whole
``$in`` list, one value at a time, so ``check_many(1000)`` costs about 1 ms per hit
there, where mongod answers from the index. Its upserts also slow down after about
10,000 writes with retryable writes on; this run stays below that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from features_gql.api import FeaturesAPI
from features_gql.domain import Resource
from features_gql.stores import Store
from features_gql_plugins.memory_store import MemoryStore
from features_gql_plugins.mongodb_store import MongoDBStore

SEED_RESOURCES = 2000
FEATURE = "beta"


@dataclass
class Result:
    store: str
    op: str
    samples: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    @property
    def per_second(self) -> float:
        return len(self.samples) / sum(self.samples)


async def _time(calls: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


async def measure(label: str, store: Store, counts: dict[str, int]) -> list[Result]:
    api = FeaturesAPI(store, deadline=30)
    await store.open()
    try:
        resources = [Resource("app", f"app-{i:05}") for i in range(SEED_RESOURCES)]
        for resource in resources[::2]:  # half of them have the feature
            await api.add(resource, FEATURE)
        rng = random.Random(1)
        picks = [rng.choice(resources) for _ in range(counts["has"])]
        batch = [(r, FEATURE) for r in rng.sample(resources, 1000)]
        unset = [(Resource("app", f"none-{i}"), FEATURE) for i in range(1000)]
        for _ in range(20):  # warm up connections and caches
            await api.has(picks[0], FEATURE)
        results = [
            Result(label, "has", await _time(counts["has"], lambda i: api.has(picks[i], FEATURE))),
            Result(
                label,
                "add",
                await _time(counts["add"], lambda i: api.add(Resource("user", f"u{i}"), FEATURE)),
            ),
            Result(
                label,
                "check_many(1000)",
                await _time(counts["check_many"], lambda i: api.check_many(batch)),
            ),
            Result(
                label,
                "check_many(1000)*",
                await _time(counts["check_many"], lambda i: api.check_many(unset)),
            ),
        ]
        assert (await api.check_many(batch)).count(True) == sum(
            int(r.id[4:]) % 2 == 0 for r, _ in batch
        )
        return results
    finally:
        await store.close()


async def describe(url: str, origin: str) -> str:
    store = MongoDBStore(url, database="features_gql_bench_probe")
    await store.open()
    try:
        await store.ping()
        info = store.server_info
    finally:
        await store.close()
    rs = f", replica set {info['replica_set']!r}" if info.get("replica_set") else ", standalone"
    txn = "transactions" if info.get("transactions") else "no transactions"
    return f"{origin}: reports MongoDB {info.get('version')}{rs}, writes use {txn}"


def table(results: list[Result]) -> str:
    baseline = {r.op: r.p50 for r in results if r.store == "memory"}
    lines = [
        f"{'store':<16} {'operation':<18} {'calls':>6} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'calls/s':>10} {'p50 vs memory':>14}"
    ]
    for r in results:
        lines.append(
            f"{r.store:<16} {r.op:<18} {len(r.samples):>6} {r.p50 * 1000:>9.3f} "
            f"{r.p99 * 1000:>9.3f} {r.per_second:>10.0f} {r.p50 / baseline[r.op]:>13.0f}x"
        )
    return "\n".join(lines)


async def run(url: str, origin: str, drivers: list[str], counts: dict[str, int]) -> None:
    print(f"server  {await describe(url, origin)}")
    print(f"python  {sys.version.split()[0]}, {os.cpu_count()} cores, sequential calls\n")
    results = await measure("memory", MemoryStore(), counts)
    for driver in drivers:
        database = f"features_gql_bench_{driver}_{os.getpid()}"
        store = MongoDBStore(url, database=database, driver=driver)  # type: ignore[arg-type]
        label = "mongodb" if driver == "pymongo" else "mongodb(motor)"
        try:
            results += await measure(label, store, counts)
        finally:
            await _drop(url, database)
    print(table(results))
    print(
        "\ncheck_many(1000): 1000 resources, about half of them have the feature; "
        "check_many(1000)*: none has it."
    )


async def _drop(url: str, database: str) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", choices=("pymongo", "motor", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = parser.parse_args(argv)
    counts = {"has": 2000, "add": 1000, "check_many": 20}
    if args.quick:
        counts = {"has": 200, "add": 100, "check_many": 3}
    drivers = ["pymongo", "motor"] if args.driver == "both" else [args.driver]
    url = os.environ.get("MONGODB_URL")
    if url:
        asyncio.run(run(url, "MONGODB_URL", drivers, counts))
        return 0
    origin = f"SecantusDB {_secantus_version()} (embedded, own process)"
    with tempfile.TemporaryDirectory(prefix="secantus-bench-") as storage, embedded(storage) as url:
        asyncio.run(run(url, origin, drivers, counts))
    return 0


def _secantus_version() -> str:
    from importlib.metadata import version

    return version("secantusdb")


@contextmanager
def embedded(storage: str) -> Iterator[str]:
    """The embedded server in a process of its own (it must not share our GIL), pinned
    to CPU 0 while this process takes CPU 1, as a database on another machine would."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pinned = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            storage,
            "--log-level",
            "WARNING",
        ],
        preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if pinned else None,
    )
    if pinned:
        os.sched_setaffinity(0, {1})
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the embedded MongoDB server exited with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the embedded MongoDB server did not start") from None
                time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
