"""``has``, ``add`` and ``check_many(1000)`` on every persistent store, in one run.

    python -m benchmarks.stores [--quick] [--skip-mongodb]

The same measurement as ``benchmarks.mongodb_vs_memory`` (through the in-process
``FeaturesAPI``, one call at a time; p50/p99, calls per second, and each p50 against
the memory store's, measured in the same run) on memory, SQLite (a file in a temporary
directory, the default ``synchronous = "normal"``), MongoDB and PostgreSQL.

The database servers run here on 127.0.0.1, pinned to CPU 0 while this process takes
CPU 1 (on a machine with two cores or more), as a database on another machine would:
PostgreSQL from the machine's installation in a temporary data directory with its
default durability (every commit flushed), unless ``POSTGRES_URL`` names a server;
MongoDB the embedded SecantusDB in a process of its own, unless ``MONGODB_URL`` names
one (read ``benchmarks/mongodb_vs_memory.py`` on what its figures mean). The first
lines of the output say which, with the versions they report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from benchmarks.mongodb_vs_memory import (
    Result,
    _drop,
    _secantus_version,
    embedded,
    measure,
    table,
)
from features_gql_plugins.memory_store import MemoryStore
from features_gql_plugins.sqlite_store import SQLiteStore

SCHEMA = f"features_gql_bench_{os.getpid()}"


@contextmanager
def postgres() -> Iterator[tuple[str, str]]:
    """(URL, what it is): POSTGRES_URL, or a server started here."""
    url = os.environ.get("POSTGRES_URL")
    if url:
        yield url, "POSTGRES_URL"
        return
    from tests.postgres_server import LocalPostgres

    server = LocalPostgres.create()
    try:
        server.start(cores={0} if _pinned() else None, durable=True)
        if _pinned():
            os.sched_setaffinity(0, {1})
        yield server.url, f"{server.version()}, started here (fsync on)"
    finally:
        server.remove()


@contextmanager
def mongodb() -> Iterator[tuple[str, str]]:
    """(URL, what it is): MONGODB_URL, or the embedded server in a process of its own."""
    url = os.environ.get("MONGODB_URL")
    if url:
        yield url, "MONGODB_URL"
        return
    with tempfile.TemporaryDirectory(prefix="secantus-bench-") as storage, embedded(storage) as url:
        yield url, f"SecantusDB {_secantus_version()} (embedded, own process)"


def _pinned() -> bool:
    return (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


async def run(
    postgres_url: str, mongodb_url: str | None, counts: dict[str, int], tmp: Path
) -> list[Result]:
    from features_gql_plugins.postgres_store import PostgresStore

    results = await measure("memory", MemoryStore(), counts)
    results += await measure("sqlite", SQLiteStore(str(tmp / "bench.db")), counts)
    if mongodb_url is not None:
        from features_gql_plugins.mongodb_store import MongoDBStore

        database = f"features_gql_bench_{os.getpid()}"
        try:
            results += await measure(
                "mongodb", MongoDBStore(mongodb_url, database=database), counts
            )
        finally:
            await _drop(mongodb_url, database)
    store = PostgresStore(postgres_url, schema=SCHEMA)
    try:
        results += await measure("postgres", store, counts)
    finally:
        await _drop_schema(postgres_url)
    return results


async def _drop_schema(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--skip-mongodb", action="store_true", help="skip the MongoDB rows")
    args = parser.parse_args(argv)
    counts = {"has": 2000, "add": 1000, "check_many": 20}
    if args.quick:
        counts = {"has": 200, "add": 100, "check_many": 3}
    with ExitStack() as stack:
        mongodb_url: str | None = None
        if not args.skip_mongodb:
            mongodb_url, origin = stack.enter_context(mongodb())
            print(f"mongodb   {origin}")
        postgres_url, origin = stack.enter_context(postgres())
        print(f"postgres  {origin}")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sqlite-bench-")))
        print(f"python    {sys.version.split()[0]}, {os.cpu_count()} cores, sequential calls\n")
        results = asyncio.run(run(postgres_url, mongodb_url, counts, tmp))
    print(table(results))
    print(
        "\ncheck_many(1000): 1000 resources, about half of them have the feature; "
        "check_many(1000)*: none has it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
