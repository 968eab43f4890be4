"""Every copy a service keeps reports its follower's one status in /readyz and /metrics:
an operator sees whether the catalog view follows the store, and how far behind it is."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from features_gql.bootstrap import build
from features_gql.config import Settings
from tests.conftest import Server, StartServer


async def readyz(server: Server) -> dict[str, Any]:
    async with server.session.get(server.url + "/readyz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def metric(server: Server, name: str, copy: str) -> float | None:
    async with server.session.get(server.url + "/metrics") as response:
        text = await response.text()
    found = re.search(rf'^{name}{{copy="{copy}"}} (\S+)$', text, re.MULTILINE)
    return None if found is None else float(found.group(1))


async def test_the_catalog_view_reports_how_it_follows_the_store(
    start_server: StartServer, tmp_path: Path
) -> None:
    database = f"sqlite://{tmp_path / 'features.db'}"
    # The store's reads can be made to fail (the failing store, with no fault yet), and
    # the catalog view's follower reads its change log every 50 ms here.
    held = {"plugin": "failing", "inner": database}
    server = await start_server(held)
    follower = server.service.catalog_follower
    assert follower is not None
    source: Any = follower.follower.source
    source.interval = 0.05
    other = build(Settings(store=database, loggers=()))
    await other.start()
    try:
        await other.api.define("beta")  # by another process: read from the change log
        async with asyncio.timeout(10):
            while (await readyz(server))["followers"]["catalog"]["revision"] != 1:
                await asyncio.sleep(0.05)
        catalog = (await readyz(server))["followers"]["catalog"]
        assert catalog["state"] == "following"
        assert catalog["last_error"] is None
        assert await metric(server, "features_gql_follower_following", "catalog") == 1
        assert await metric(server, "features_gql_follower_revision", "catalog") == 1
        assert await metric(server, "features_gql_follower_loads_total", "catalog") == 1

        failing: Any = server.service.store
        failing.change_faults({"outage": True})
        async with asyncio.timeout(10):
            while (await readyz(server))["followers"]["catalog"]["state"] != "unreachable":
                await asyncio.sleep(0.05)
        catalog = (await readyz(server))["followers"]["catalog"]
        assert "outage" in catalog["last_error"]
        assert catalog["revision"] == 1  # the copy is served as it is
        assert await metric(server, "features_gql_follower_following", "catalog") == 0
        lag = await metric(server, "features_gql_follower_lag_seconds", "catalog")
        assert lag is not None
        assert lag > 0

        failing.change_faults({"outage": False})
        async with asyncio.timeout(10):
            while (await readyz(server))["followers"]["catalog"]["state"] != "following":
                await asyncio.sleep(0.05)
    finally:
        await other.stop()
