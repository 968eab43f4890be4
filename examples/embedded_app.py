"""Model 1, embedded: an aiohttp application that keeps its flags in its own SQLite file,
serves the features-gql GraphQL endpoint for the control plane, and checks flags in
process with a LocalReplica that the endpoint's writes reach at once.

    python examples/embedded_app.py --port 8081 --db /tmp/shop-flags.db

    # the control plane turns a flag on, over GraphQL (subscriptions work here too)
    curl -s localhost:8081/features/graphql -H 'Content-Type: application/json' -d '{"query":
      "mutation { addFeature(resource: {type: \\"pipeline\\", id: \\"p1\\"}, feature: \\"speedups\\") { __typename } }"}'

    # the application's own route checks it in process: no store call, no HTTP
    curl -s localhost:8081/pipelines/p1     # {"pipeline": "p1", "speedups": true}

If the database becomes unreadable, the application keeps answering from the replica's
copy (``/pipelines/...`` keeps working) and ``/flags/status`` says how stale it is.
"""

# ruff: noqa: E501 - the shell example above is one line, as it is typed
from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from aiohttp import web

from features_gql import FeaturesAPI
from features_gql.feed import ChangeFeed
from features_gql.http import mount_graphql
from features_gql.http.app import request_context
from features_gql.replica import LocalReplica
from features_gql_plugins.sqlite_store import SQLiteStore

REPLICA = web.AppKey("replica", LocalReplica)


async def pipeline(request: web.Request) -> web.Response:
    """The application's own route: a flag check costs about a dict lookup."""
    replica = request.app[REPLICA]
    pipeline_id = request.match_info["id"]
    fast = replica.has(("pipeline", pipeline_id), "speedups")
    return web.json_response({"pipeline": pipeline_id, "speedups": fast})


async def status(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    staleness = replica.staleness
    return web.json_response(
        {
            "revision": replica.revision,
            "assignments": len(replica),
            "staleness_seconds": None if staleness is None else round(staleness, 3),
            "last_error": replica.last_error,
        }
    )


def create_app(db: str) -> web.Application:
    store = SQLiteStore(db)
    api = FeaturesAPI(store, deadline=0.5)
    feed = ChangeFeed(api)
    replica = LocalReplica(api, feed=feed)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        await replica.start()
        yield
        await replica.stop()
        await feed.stop()
        await store.close()

    app = web.Application(middlewares=[request_context])
    app[REPLICA] = replica
    app.cleanup_ctx.append(lifecycle)
    # No auth here: guard this route (or pass auth=AuthPolicy(...)) in a real application.
    mount_graphql(app, api, path="/features/graphql", feed=feed)
    app.router.add_get("/pipelines/{id}", pipeline)
    app.router.add_get("/flags/status", status)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--db", default="shop-flags.db", help="the application's SQLite file")
    args = parser.parse_args()
    web.run_app(create_app(args.db), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
