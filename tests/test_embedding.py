"""Model 1: the application keeps the data, reads in-process, and mounts the endpoint."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from features_gql import FeaturesAPI
from features_gql.http import mount_graphql
from features_gql.http.app import request_context
from features_gql_plugins.sqlite_store import SQLiteStore

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


async def test_mounted_endpoint_writes_what_the_application_reads(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "app.db"))
    api = FeaturesAPI(store, deadline=0.5)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    app = web.Application(middlewares=[request_context])
    app.cleanup_ctx.append(lifecycle)

    async def own(request: web.Request) -> web.Response:
        return web.json_response({"mine": True})

    app.router.add_get("/own", own)
    mount_graphql(app, api, path="/features/graphql")

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            mutation = (
                'mutation { addFeature(resource: {type: "pipeline", id: "p1"}, '
                'feature: "speedups") { ... on FeatureChange { changed } } }'
            )
            async with session.post(f"{url}/features/graphql", json={"query": mutation}) as r:
                assert (await r.json())["data"]["addFeature"]["changed"] is True
                assert r.headers["X-Request-ID"]
            async with session.get(f"{url}/own") as r:
                assert await r.json() == {"mine": True}
        assert await api.has(("pipeline", "p1"), "speedups") is True
    finally:
        await runner.cleanup()


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embedded_app.py"


async def test_the_embedded_example_checks_in_process_what_the_endpoint_writes(
    tmp_path: Path,
) -> None:
    spec = importlib.util.spec_from_file_location("embedded_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    runner = web.AppRunner(example.create_app(str(tmp_path / "shop.db")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    mutation = (
        'mutation { addFeature(resource: {type: "pipeline", id: "p1"}, feature: "speedups") '
        "{ ... on FeatureChange { changed } } }"
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/pipelines/p1") as r:
                assert await r.json() == {"pipeline": "p1", "speedups": False}
            async with session.post(f"{url}/features/graphql", json={"query": mutation}) as r:
                assert (await r.json())["data"]["addFeature"]["changed"] is True
            # The write reached the in-process copy through the feed, not a poll.
            async with asyncio.timeout(5):
                while True:
                    async with session.get(f"{url}/pipelines/p1") as r:
                        if (await r.json())["speedups"]:
                            break
            async with session.get(f"{url}/flags/status") as r:
                status = await r.json()
            assert (status["revision"], status["assignments"], status["last_error"]) == (1, 1, None)
    finally:
        await runner.cleanup()


async def test_the_readme_embedding_example_runs_as_written(tmp_path: Path) -> None:
    (example,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", README, re.S)
        if block.startswith("# features.py\n")
    ]
    namespace: dict[str, Any] = {}
    exec(example.replace("/var/lib/myapp/features.db", str(tmp_path / "f.db")), namespace)
    app, api, replica = namespace["app"], namespace["api"], namespace["replica"]
    replica.interval = 0.01  # follow quickly, for the test
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/features/graphql"
    try:
        async with aiohttp.ClientSession() as session:
            mutation = (
                'mutation { addFeature(resource: {type: "pipeline", id: "p1"}, '
                'feature: "speedups") { ... on FeatureChange { changed } } }'
            )
            async with session.post(url, json={"query": mutation}) as response:
                assert (await response.json())["data"]["addFeature"]["changed"] is True
        assert await api.has(("pipeline", "p1"), "speedups") is True
        async with asyncio.timeout(5):
            while not replica.has(("pipeline", "p1"), "speedups"):
                await asyncio.sleep(0.01)
    finally:
        await runner.cleanup()
    following = [t for t in asyncio.all_tasks() if t.get_name() == "features-gql-replica"]
    assert following == [], "the lifecycle stops the replica"
