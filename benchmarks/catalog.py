"""Import rate, and listing and history page latency at 1M assignments against 10k.

    python -m benchmarks.catalog [--quick] [--assignments N] [--small N] [--stores sqlite,postgres]

**Import.** Writes N assignments as JSON Lines (``--assignments``, 1,000,000 by default:
``N/10`` resources of four types with ten of fifty features each, in the order an export
writes them) and runs ``features-gql import`` on them into an empty store, as a
process of its own. Reported: assignments per second as the command measures them
(from its first line read to its last change committed), per second of CPU the command
used (user and system time: the figure other work on a shared machine disturbs least),
and against two baselines
measured in the same run: the same rows inserted by raw ``sqlite3`` into a table with
the same primary key (no log, no counts, no second index: the floor of storing them),
and ``FeaturesAPI.add`` one assignment at a time (the only way in before bulk writes).

**Pages.** On the store the import filled, and on one filled the same way with
``--small`` assignments (10,000), measures the p50 and p99 latency of one page of 100
through the in-process ``FeaturesAPI`` (validation, deadline and instrumentation
included): the catalog (``features``, first page and one from the middle), the
resources of a type from the middle, the types, one feature's count, and the history
(unfiltered, of one resource, of one feature, of one actor, each from the middle of
the log). Each row's ratio is its p50 at N against its p50 at the small size: reads
served by indexes stay near 1x however large the store grows.

SQLite runs on a file in a temporary directory, with the default ``synchronous =
"normal"``. ``--stores postgres`` adds PostgreSQL (``POSTGRES_URL``, or a server started
here from the machine's installation, as ``benchmarks.stores`` does). Results are
written as JSON to ``benchmarks/results/catalog.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from features_gql.api import FeaturesAPI, encode_key
from features_gql.stores import Store
from features_gql_plugins.sqlite_store import SQLiteStore

TYPES = ("org", "pipeline", "repo", "user")
TARGET_RATE = 100_000
RESULTS = Path(__file__).resolve().parent / "results" / "catalog.json"


@dataclass
class Row:
    store: str
    scenario: str
    value: float
    unit: str
    baseline: str = ""
    ratio: float | None = None
    p99: float | None = None
    target: str = ""


def assignments(count: int) -> list[tuple[str, str, str]]:
    """``count`` assignments, ordered by (type, id, feature) as an export writes them."""
    rows = []
    for n in range(count):
        holder = n // 10
        type_ = TYPES[holder % len(TYPES)]
        rows.append((type_, f"{type_}-{holder:08d}", f"feature-{(holder % 5) * 10 + n % 10:02d}"))
    rows.sort()
    return rows


def write_lines(rows: list[tuple[str, str, str]], path: Path) -> None:
    with path.open("wb") as out:
        for type_, id_, feature in rows:
            out.write(orjson.dumps({"type": type_, "id": id_, "feature": feature}) + b"\n")


def run_import(source: Path, store: str) -> tuple[float, float, float]:
    """(assignments per second as the command reports it, wall-clock seconds, CPU seconds
    of the command: its user and system time, which other work on a shared machine
    inflates far less than the wall clock)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "features_gql.cli", "import", str(source), "--store", store],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")},
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"import failed: {result.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = re.search(r"\(([\d,]+) assignments/s\)", result.stderr)
    assert rate is not None, result.stderr
    return float(rate.group(1).replace(",", "")), wall, cpu


def raw_sqlite_rate(rows: list[tuple[str, str, str]], directory: Path) -> float:
    """The floor: the same rows into one primary-keyed table, batches of 10,000."""
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE a (t TEXT NOT NULL, i TEXT NOT NULL, f TEXT NOT NULL, "
        "PRIMARY KEY (t, i, f)) WITHOUT ROWID"
    )
    started = time.perf_counter()
    for start in range(0, len(rows), 10_000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO a VALUES (?, ?, ?)", rows[start : start + 10_000])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return len(rows) / seconds


async def one_at_a_time_rate(store: Store, count: int) -> float:
    api = FeaturesAPI(store)
    await store.open()
    try:
        started = time.perf_counter()
        for n in range(count):
            await api.add(("bench", f"one-{n:06d}"), "single")
        return count / (time.perf_counter() - started)
    finally:
        await store.close()


async def _times(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    await call()  # warm the caches and the prepared statement
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def page_latencies(store: Store, size: int, repeat: int) -> dict[str, list[float]]:
    """p50/p99 inputs: milliseconds per page, for each listing and history."""
    api = FeaturesAPI(store, deadline=30)
    await store.open()
    try:
        features = await api.list_features(first=25)
        middle_feature = features.features[len(features.features) // 2].name
        # The resources of one type, half of them: the page after them is from the middle.
        half = await api.list_resources(TYPES[1], first=min(1000, max(size // 80, 1)))
        middle_resource = half.resources[-1]
        # Three quarters up the log, newest first: a full page of older changes follows
        # for each filter, at both sizes.
        middle = encode_key("revision", await api.revision() * 3 // 4)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "features, first page": lambda: api.list_features(first=100),
            "features, page after the middle": lambda: api.list_features(
                first=100, after=features.end_cursor
            ),
            "resources of a type, page from the middle": lambda: api.list_resources(
                TYPES[1], first=100, after=half.end_cursor
            ),
            "resourceTypes": lambda: api.resource_types(),
            "one feature's resourceCount": lambda: api.feature_infos([middle_feature]),
            "history, page from the middle": lambda: api.history(first=100, after=middle),
            "history of a resource": lambda: api.history(resource=middle_resource, first=100),
            "history of a feature, page from the middle": lambda: api.history(
                feature=middle_feature, first=100, after=middle
            ),
            "history of an actor, page from the middle": lambda: api.history(
                actor="import", first=100, after=middle
            ),
        }
        return {name: await _times(call, repeat) for name, call in calls.items()}
    finally:
        await store.close()


def _p99(samples: list[float]) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.99))]


async def measure_store(
    label: str,
    make_store: Callable[[str], tuple[str, Callable[[], Store]]],
    big: int,
    small: int,
    repeat: int,
    directory: Path,
) -> list[Row]:
    rows: list[Row] = []
    data = {size: assignments(size) for size in (small, big)}
    sources = {}
    for size, found in data.items():
        sources[size] = directory / f"{size}.jsonl"
        write_lines(found, sources[size])
    stores = {size: make_store(f"s{size}") for size in (small, big)}
    rate, wall, cpu = run_import(sources[big], stores[big][0])
    run_import(sources[small], stores[small][0])
    if label == "sqlite":
        floor = raw_sqlite_rate(data[big], directory)
        rows.append(Row(label, f"raw sqlite3 insert, {big:,} rows (baseline)", floor, "rows/s"))
    single = await one_at_a_time_rate(make_store("single")[1](), min(10_000, big))
    rows.append(Row(label, "FeaturesAPI.add, one at a time (baseline)", single, "assignments/s"))
    rows.append(
        Row(
            label,
            f"features-gql import, {big:,} assignments ({wall:.1f} s wall)",
            rate,
            "assignments/s",
            "one at a time",
            rate / single,
            target=f">= {TARGET_RATE:,}/s" if label == "sqlite" else "",
        )
    )
    rows.append(
        Row(label, f"features-gql import: assignments per CPU second ({cpu:.1f} s CPU)",
            big / cpu, "assignments/s")
    )  # fmt: skip
    if label == "sqlite":
        rows.append(
            Row(label, "features-gql import against raw insert", rate, "assignments/s",
                "raw sqlite3", rate / floor)
        )  # fmt: skip
    at_small = await page_latencies(stores[small][1](), small, repeat)
    at_big = await page_latencies(stores[big][1](), big, repeat)
    for name, samples in at_big.items():
        base = statistics.median(at_small[name])
        p50 = statistics.median(samples)
        scenario = f"{name} at {big:,}"
        rows.append(
            Row(label, scenario, p50, "ms p50", f"at {small:,}", p50 / base, _p99(samples), "~1x")
        )
    return rows


def table(rows: list[Row]) -> str:
    header = f"{'scenario':62} {'value':>16} {'p99 ms':>8} {'ratio':>8}  {'baseline':14}"
    lines = [f"{'store':8} {header} target", "-" * 128]
    for row in rows:
        value = (
            f"{row.value:,.0f} {row.unit}" if row.value >= 100 else f"{row.value:.3f} {row.unit}"
        )
        p99 = "" if row.p99 is None else f"{row.p99:.3f}"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            f"{row.store:8} {row.scenario[:62]:62} {value:>16} {p99:>8} {ratio:>8}  "
            f"{row.baseline:14} {row.target}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignments", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200, help="pages timed per scenario")
    parser.add_argument("--stores", default="sqlite", help="comma-separated: sqlite, postgres")
    parser.add_argument("--quick", action="store_true", help="20,000 against 2,000, 20 pages")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.assignments, args.small, args.repeat = 20_000, 2_000, 20
    rows: list[Row] = []
    load_before = os.getloadavg()
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="catalog-")))
        for label in [s.strip() for s in args.stores.split(",") if s.strip()]:
            if label == "sqlite":

                def sqlite(name: str) -> tuple[str, Callable[[], Store]]:
                    path = directory / f"{name}.db"
                    return f"sqlite://{path}", lambda: SQLiteStore(str(path))

                make = sqlite
            elif label == "postgres":
                from benchmarks.stores import postgres
                from features_gql_plugins.postgres_store import PostgresStore

                server, origin = stack.enter_context(postgres())
                print(f"postgres  {origin}")

                def make_postgres(
                    name: str, url: str = server, run: int = os.getpid()
                ) -> tuple[str, Callable[[], Store]]:
                    schema = f"catalog_bench_{run}_{name}"
                    spec = f"{url}{'&' if '?' in url else '?'}schema={schema}"
                    return spec, lambda: PostgresStore(
                        url, schema=schema, command_timeout_ms=30_000
                    )

                make = make_postgres
            else:
                parser.error(f"unknown store {label!r}: sqlite or postgres")
            rows += asyncio.run(
                measure_store(label, make, args.assignments, args.small, args.repeat, directory)
            )
    # The machine may be shared: the load says how much of it this run had.
    load = f"load average {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; {load}\n")
    print(table(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
