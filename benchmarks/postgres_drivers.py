"""psycopg 3 (with psycopg_pool) against asyncpg, on the postgres store's own statements.

    python -m benchmarks.postgres_drivers [--quick]

The measurement behind the postgres store's choice of driver (docs/postgres.md). Both
drivers run the very statements the store runs, through a pool of four connections, on
one table layout: ``has`` (one indexed lookup), ``add`` (one write statement: the
assignment, the revision counter and the change log, one round trip), and
``check_many(1000)`` (1000 questions as three arrays, joined to the primary key, one
round trip). Calls are sequential (latency: p50, p99 and calls per second), then 32 at
a time (``has x32``: throughput through the pool). The drivers take turns, a chunk of
calls each, so that drifts in this machine's latency reach all of them alike. The ratio
column is each p50 against psycopg's, measured in the same run. The server is a
PostgreSQL cluster started here from the machine's installation (as the tests start
one), with every commit flushed, unless ``POSTGRES_URL`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.stores import postgres

SCHEMA = "features_gql_driver_bench"
Call = Callable[[int], Awaitable[Any]]
SEED = 2000

DDL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.assignments (
    resource_type text COLLATE "C" NOT NULL,
    resource_id   text COLLATE "C" NOT NULL,
    feature       text COLLATE "C" NOT NULL,
    at            timestamptz NOT NULL,
    actor         text,
    PRIMARY KEY (resource_type, resource_id, feature)
);
CREATE TABLE {SCHEMA}.changes (
    revision bigint PRIMARY KEY, op text NOT NULL, resource_type text COLLATE "C" NOT NULL,
    resource_id text COLLATE "C" NOT NULL, feature text COLLATE "C" NOT NULL,
    at timestamptz NOT NULL, actor text
);
CREATE TABLE {SCHEMA}.revision (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), revision bigint NOT NULL
);
INSERT INTO {SCHEMA}.revision (revision) VALUES (0);
"""

HAS = (
    f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.assignments "
    "WHERE resource_type = $1 AND resource_id = $2 AND feature = $3)"
)
ADD = f"""
WITH applied AS (
    INSERT INTO {SCHEMA}.assignments (resource_type, resource_id, feature, at, actor)
    VALUES ($1, $2, $3, now(), $4) ON CONFLICT DO NOTHING RETURNING 1
), counted AS (
    UPDATE {SCHEMA}.revision SET revision = revision + 1
    WHERE EXISTS (SELECT FROM applied) RETURNING revision
), logged AS (
    INSERT INTO {SCHEMA}.changes (revision, op, resource_type, resource_id, feature, at, actor)
    SELECT revision, 'add', $1, $2, $3, clock_timestamp(), $4 FROM counted RETURNING revision
)
SELECT (SELECT revision FROM logged), (SELECT revision FROM {SCHEMA}.revision)
"""
CHECK_MANY = f"""
SELECT wanted.n FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
    AS wanted (resource_type, resource_id, feature, n)
JOIN {SCHEMA}.assignments a USING (resource_type, resource_id, feature)
"""


def psycopg_sql(statement: str) -> str:
    """The same statement with psycopg's named placeholders (``$2`` -> ``%(p2)s``)."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", statement)


def psycopg_params(*values: Any) -> dict[str, Any]:
    return {f"p{n}": value for n, value in enumerate(values, start=1)}


class Driver:
    name = ""

    async def open(self, url: str) -> None: ...
    async def close(self) -> None: ...
    async def execute_script(self, script: str) -> None: ...
    async def has(self, t: str, i: str, f: str) -> bool: ...
    async def add(self, t: str, i: str, f: str) -> int: ...
    async def check_many(self, items: list[tuple[str, str, str]]) -> list[bool]: ...


class Asyncpg(Driver):
    """asyncpg's pool as an application would create it: released connections are reset
    (``RESET ALL``, ``UNLISTEN *``...: one more round trip per call)."""

    name = "asyncpg"

    async def open(self, url: str) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(url, min_size=4, max_size=4)

    async def close(self) -> None:
        await self.pool.close()

    async def execute_script(self, script: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(script)

    async def has(self, t: str, i: str, f: str) -> bool:
        return bool(await self.pool.fetchval(HAS, t, i, f))

    async def add(self, t: str, i: str, f: str) -> int:
        row = await self.pool.fetchrow(ADD, t, i, f, None)
        return int(row[0] if row[0] is not None else row[1])

    async def check_many(self, items: list[tuple[str, str, str]]) -> list[bool]:
        answers = [False] * len(items)
        rows = await self.pool.fetch(
            CHECK_MANY, [t for t, _, _ in items], [i for _, i, _ in items], [f for *_, f in items]
        )
        for (n,) in rows:
            answers[n - 1] = True
        return answers


class AsyncpgNoReset(Asyncpg):
    """asyncpg's pool with no reset on release: what a store that never changes session
    state would configure for its own pool."""

    name = "asyncpg/nr"

    async def open(self, url: str) -> None:
        import asyncpg

        async def keep(connection: Any) -> None:
            return None

        self.pool = await asyncpg.create_pool(url, min_size=4, max_size=4, reset=keep)


class Psycopg(Driver):
    name = "psycopg"

    async def open(self, url: str) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            url, min_size=4, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await self.pool.open(wait=True)
        self.has_sql = psycopg_sql(HAS)
        self.add_sql = psycopg_sql(ADD)
        self.check_sql = psycopg_sql(CHECK_MANY)

    async def close(self) -> None:
        await self.pool.close()

    async def execute_script(self, script: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(script.encode())

    async def has(self, t: str, i: str, f: str) -> bool:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self.has_sql, psycopg_params(t, i, f), binary=True)
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def add(self, t: str, i: str, f: str) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self.add_sql, psycopg_params(t, i, f, None), binary=True)
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0] if row[0] is not None else row[1])

    async def check_many(self, items: list[tuple[str, str, str]]) -> list[bool]:
        answers = [False] * len(items)
        params = psycopg_params(
            [t for t, _, _ in items], [i for _, i, _ in items], [f for *_, f in items]
        )
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self.check_sql, params, binary=True)
            rows = await cursor.fetchall()
        for (n,) in rows:
            answers[n - 1] = True
        return answers


@dataclass
class Result:
    driver: str
    op: str
    samples: list[float] = field(default_factory=list)
    #: Wall-clock time of the calls (for concurrent calls, less than their sum).
    elapsed: float = 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    @property
    def calls_per_second(self) -> float:
        return len(self.samples) / self.elapsed


async def timed(result: Result, calls: range, width: int, call: Call) -> None:
    """Run ``call(n)`` for each n in ``calls``, ``width`` at a time, into ``result``."""

    async def worker(offset: int) -> None:
        for n in calls[offset::width]:
            started = time.perf_counter()
            await call(n)
            result.samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(offset) for offset in range(width)))
    result.elapsed += time.perf_counter() - started


async def measure(drivers: list[Driver], url: str, counts: dict[str, int]) -> list[Result]:
    """Every operation on every driver, interleaved in chunks of calls.

    This machine's latency drifts (other work shares its cores and disk); running the
    drivers in turn, a chunk each, lets every drift reach all of them alike.
    """
    for driver in drivers:
        await driver.open(url)
    try:
        await drivers[0].execute_script(DDL)
        resources = [("app", f"app-{n:05}") for n in range(SEED)]
        for t, i in resources[::2]:
            await drivers[0].add(t, i, "beta")
        rng = random.Random(1)
        picks = [rng.choice(resources) for _ in range(counts["has"])]
        batch = [(t, i, "beta") for t, i in rng.sample(resources, 1000)]
        expected = [int(i[4:]) % 2 == 0 for _, i, _ in batch]
        for driver in drivers:
            assert await driver.check_many(batch) == expected
            for _ in range(50):  # warm up: connections, prepared statements
                await driver.has(*picks[0], "beta")

        def operations(d: Driver) -> list[tuple[str, int, int, Call]]:
            """(operation, calls, calls at a time, call)"""
            return [
                ("has", counts["has"], 1, lambda n: d.has(*picks[n], "beta")),
                ("add", counts["add"], 1, lambda n: d.add("user", f"{d.name}-{n}", "beta")),
                ("check_many(1000)", counts["check_many"], 1, lambda n: d.check_many(batch)),
                ("has x32", counts["has"], 32, lambda n: d.has(*picks[n], "beta")),
            ]

        results = {(d.name, op): Result(d.name, op) for d in drivers for op, *_ in operations(d)}
        for step in range(len(operations(drivers[0]))):
            op, count, width, _ = operations(drivers[0])[step]
            chunk = max(width, count // 20)
            for turn, first in enumerate(range(0, count, chunk)):
                # A different driver goes first each turn.
                for driver in drivers[turn % len(drivers) :] + drivers[: turn % len(drivers)]:
                    call = operations(driver)[step][3]
                    calls = range(first, min(first + chunk, count))
                    await timed(results[(driver.name, op)], calls, width, call)
        await drivers[0].execute_script(f"DROP SCHEMA {SCHEMA} CASCADE")
        return list(results.values())
    finally:
        for driver in drivers:
            await driver.close()


def table(results: list[Result]) -> str:
    baseline = {r.op: r.p50 for r in results if r.driver == "psycopg"}
    lines = [
        f"{'driver':<10} {'operation':<18} {'calls':>6} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'calls/s':>10} {'p50 vs psycopg':>15}"
    ]
    for r in results:
        lines.append(
            f"{r.driver:<10} {r.op:<18} {len(r.samples):>6} {r.p50 * 1000:>9.3f} "
            f"{r.p99 * 1000:>9.3f} {r.calls_per_second:>10.0f} {r.p50 / baseline[r.op]:>14.2f}x"
        )
    return "\n".join(lines)


async def run(url: str, origin: str, counts: dict[str, int]) -> None:
    from importlib.metadata import version

    import psycopg

    print(f"server  {origin}")
    print(
        f"drivers asyncpg {version('asyncpg')}; psycopg {version('psycopg')} "
        f"({psycopg.pq.__impl__} libpq {psycopg.pq.version()}), psycopg_pool "
        f"{version('psycopg-pool')}"
    )
    print(f"python  {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    results = await measure([Psycopg(), Asyncpg(), AsyncpgNoReset()], url, counts)
    order = ["psycopg", "asyncpg", "asyncpg/nr"]
    print(table(sorted(results, key=lambda r: (r.op, order.index(r.driver)))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = parser.parse_args(argv)
    counts = {"has": 6000, "add": 2000, "check_many": 400}
    if args.quick:
        counts = {"has": 200, "add": 100, "check_many": 10}
    with postgres() as (url, origin):
        asyncio.run(run(url, origin, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
