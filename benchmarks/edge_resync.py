"""An edge's resync at scale: `python -m benchmarks.edge_resync` (see --help).

An upstream `serve` on SQLite holding N assignments (a million by default) and a new edge,
`serve --upstream URL` in its default configuration (its copy in SQLite), each a process
of its own, on a core of its own where the machine has two. Measured: the time from the
edge's start until its copy reflects the upstream's revision (`syncStatus`), which is a
resync from the upstream's snapshot applied through the local store's bulk path.
Baseline, in the same run: the same assignments written straight into a SQLite store with
its bulk path (`add_many`), which is how the upstream's data is prepared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.run import features_gql, free_port, load_cpus, pinned, post, running, server_cpus
from features_gql.domain import Resource
from features_gql_plugins.sqlite_store import SQLiteStore

STATUS = "{ syncStatus { revision upstreamRevision state } }"
CHUNK = 5000


async def prepare(path: Path, count: int) -> float:
    """Write ``count`` assignments into a new SQLite store; its rate (assignments/s)."""
    store = SQLiteStore(str(path))
    await store.open()
    try:
        started = time.perf_counter()
        for start in range(0, count, CHUNK):
            items = [
                (Resource("pipeline", f"p{i:08d}"), f"f{i % 7}")
                for i in range(start, min(count, start + CHUNK))
            ]
            await store.add_many(items, actor="bench")
        return count / (time.perf_counter() - started)
    finally:
        await store.close()


async def synced(edge: str, revision: int, within: float) -> float:
    """Seconds until ``edge`` reflects ``revision``, polling its syncStatus."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < within:
            try:
                async with session.post(edge, json={"query": STATUS}) as response:
                    status = (await response.json())["data"]["syncStatus"]
                if status["revision"] == revision:
                    return time.perf_counter() - started
            except (aiohttp.ClientError, KeyError, TypeError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the edge did not reach revision {revision} within {within} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignments", type=int, default=1_000_000)
    parser.add_argument("--within", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        upstream_db = Path(work) / "upstream.db"
        prepared = asyncio.run(prepare(upstream_db, args.assignments))
        up, down = free_port(), free_port()
        upstream_cmd = features_gql(up, store=f"sqlite://{upstream_db}")
        edge_cmd = [
            *features_gql(down, store=f"sqlite://{Path(work) / 'edge.db'}"),
            "--upstream", f"http://127.0.0.1:{up}/graphql",
        ]  # fmt: skip
        with running(pinned(upstream_cmd, load_cpus()), up):
            revision = post(f"http://127.0.0.1:{up}/graphql", {"query": "{ revision }"})
            target = int(revision["data"]["revision"])
            started = time.perf_counter()
            with running(pinned(edge_cmd, server_cpus()), down):
                ready = time.perf_counter() - started
                seconds = asyncio.run(
                    synced(f"http://127.0.0.1:{down}/graphql", target, args.within)
                )
    rate = args.assignments / (ready + seconds)
    print(
        json.dumps(
            {
                "assignments": args.assignments,
                "edge_start_s": round(ready, 2),
                "resync_s_after_start": round(seconds, 2),
                "resync_per_s_from_start": round(rate),
                "bulk_insert_per_s_baseline": round(prepared),
                "ratio": round(rate / prepared, 2),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
