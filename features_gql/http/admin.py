"""Chaos controls: change the faults of a running service's fault-injection stores.

``GET /admin/faults``
    The ``failing`` and ``slow`` stores in the store chain (outermost first), each with
    its config path, settings and counters, and the health of the event sinks.
``POST /admin/faults``
    A JSON object of options, as in TOML, for one of them: the outermost by default, or
    the one named by ``"store"`` (a path such as ``"store.inner"``, or a plugin name).
    ``{"outage": true}`` starts an outage until ``{"outage": false}``;
    ``{"outage_seconds": 30}`` starts one for 30 s; ``{"error_rate": 0.5}``,
    ``{"stall": false}``... change the rest. Either every change applies or none.

Every request needs ``Authorization: Bearer <token>`` with a token that has the
``admin`` scope: an ``[auth.tokens.NAME]`` one, or ``FEATURES_GQL_ADMIN_TOKEN`` /
``[server] admin_token`` (a token named ``admin``). With none configured the endpoints
refuse every request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from features_gql.auth import Principal
from features_gql.bootstrap import Service
from features_gql.errors import ConfigError
from features_gql.faults import FaultControl, fault_controls
from features_gql.http.pipeline import Pipeline
from features_gql.http.request_body import DuplicateKey, TooDeep, decode_json
from features_gql.http.responses import error_response

log = logging.getLogger("features_gql.admin")

FAULTS_PATH = "/admin/faults"

AdminHandler = Callable[[web.Request, Principal], Awaitable[web.Response]]
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _error(status: int, code: str, message: str) -> web.Response:
    return error_response(status, message, code)


def _guarded(pipeline: Pipeline, handler: AdminHandler) -> Handler:
    admin_configured = any("admin" in token.scopes for token in pipeline.auth.tokens)

    async def guarded(request: web.Request) -> web.Response:
        if not admin_configured:
            return _error(
                403,
                "ADMIN_DISABLED",
                "Admin endpoints are disabled: configure a token with the admin scope "
                "([auth.tokens.NAME] or FEATURES_GQL_ADMIN_TOKEN) to enable them.",
            )
        entered = pipeline.enter_http(request, "admin", realm="features-gql admin")
        if isinstance(entered, web.Response):
            return entered
        return await handler(request, entered)

    return guarded


def _state(service: Service) -> dict[str, Any]:
    health = service.dispatcher.health
    return {
        "stores": [
            {"path": path, "plugin": control.plugin, "name": control.name, **control.fault_state()}
            for path, control in fault_controls(service.store)
        ],
        "sinks": {"failures": dict(health.failures), "dropped": health.dropped},
    }


def _target(
    controls: list[tuple[str, FaultControl]], wanted: object
) -> tuple[str, FaultControl] | str:
    """The store to change, or why there is none."""
    if wanted is None:
        return controls[0]
    by_path = [(p, c) for p, c in controls if p == wanted]
    by_plugin = [(p, c) for p, c in controls if c.plugin == wanted]
    if len(by_path) == 1:
        return by_path[0]
    if len(by_plugin) == 1:
        return by_plugin[0]
    known = ", ".join(f"{p} ({c.plugin})" for p, c in controls)
    return f"no single fault store matches store={wanted!r}; fault stores: {known}"


def add_admin_routes(app: web.Application, service: Service, pipeline: Pipeline) -> None:
    """Serve ``/admin/faults`` for ``service``, entered through ``pipeline`` with a token
    that has the admin scope."""

    async def show(request: web.Request, principal: Principal) -> web.Response:
        return web.json_response(_state(service))

    async def change(request: web.Request, principal: Principal) -> web.Response:
        try:
            # The service's one JSON decoder: no NaN, no repeated key, bounded nesting.
            body = decode_json(await request.read())
        except ValueError as exc:
            detail = f" ({exc})" if isinstance(exc, DuplicateKey | TooDeep) else ""
            return _error(400, "BAD_REQUEST", f"The body must be a JSON object of options{detail}.")
        if not isinstance(body, dict) or not body:
            return _error(400, "BAD_REQUEST", "The body must be a non-empty JSON object.")
        controls = fault_controls(service.store)
        if not controls:
            return _error(
                404,
                "NO_FAULT_STORE",
                f"The store {service.store.name} has no failing or slow store to control; "
                "start the service with --fault / --latency or a failing/slow [store] table.",
            )
        target = _target(controls, body.pop("store", None))
        if isinstance(target, str):
            return _error(400, "BAD_REQUEST", target)
        path, control = target
        try:
            control.change_faults(body)
        except ConfigError as exc:
            return _error(400, "BAD_REQUEST", str(exc))
        log.warning(
            "fault injection changed over %s",
            FAULTS_PATH,
            extra={
                "fields": {
                    "store": control.name,
                    "path": path,
                    "changes": json.dumps(body, sort_keys=True),
                    "actor": principal.name,
                }
            },
        )
        return web.json_response(_state(service))

    app.router.add_get(FAULTS_PATH, _guarded(pipeline, show))
    app.router.add_post(FAULTS_PATH, _guarded(pipeline, change))
