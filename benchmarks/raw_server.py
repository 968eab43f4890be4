"""The baseline: a raw aiohttp handler answering a flag check from a dict, as JSON.

It does what features-gql does minus GraphQL, validation and the store protocol, so the
ratio of the two says what those cost. Started by the harness in its own process.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

FLAGS = {("pipeline", "db8e9a0d", "speedups")}


async def check(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    variables = body.get("variables") or {}
    resource = variables.get("r", {})
    enabled = (resource.get("type"), resource.get("id"), variables.get("f")) in FLAGS
    return web.Response(
        body=orjson.dumps({"data": {"hasFeature": enabled}}), content_type="application/json"
    )


async def check_many(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    items = (body.get("variables") or {}).get("items", [])
    answers = [
        {"enabled": (i["resource"]["type"], i["resource"]["id"], i["feature"]) in FLAGS}
        for i in items
    ]
    return web.Response(
        body=orjson.dumps({"data": {"checks": answers}}), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/check", check)
    app.router.add_post("/checks", check_many)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
