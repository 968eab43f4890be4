"""Real headless Chromium (Debian's ``chromium`` package) driven by Playwright, and the
real service in a thread of its own, for the control panel's tests.

One browser per test module (Playwright's synchronous API keeps an event loop running in
the main thread while it is started, which asyncio tests of later modules cannot share);
each test gets a fresh browser context (its own
sessionStorage) that refuses every request to a host other than 127.0.0.1 and records
console errors, so a test fails when the panel reaches beyond the service or logs one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from playwright.sync_api import sync_playwright

from features_gql.bootstrap import build
from features_gql.config import Settings
from features_gql.http.app import create_app

CHROMIUM = "/usr/bin/chromium"
#: Where the browser tests save their screenshots: a scratch directory, or the README's
#: copies in docs/ when FEATURES_GQL_UPDATE_SCREENSHOTS=1 (so a test run leaves the
#: working tree clean unless asked).
SCREENSHOTS = (
    Path(__file__).resolve().parent.parent / "docs"
    if os.environ.get("FEATURES_GQL_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "features-gql-screenshots"
)
SCREENSHOTS.mkdir(parents=True, exist_ok=True)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


class ThreadedServer:
    """The service on 127.0.0.1 and a free port, served by an event loop in a thread,
    so that synchronous Playwright can drive a browser against it from the test."""

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("loggers", ())
        settings.setdefault("store", "memory")
        self.service = build(Settings(**settings))
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ThreadedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(create_app(self.service))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    def gql(self, query: str, variables: dict[str, Any] | None = None, token: str = "") -> Any:
        """A GraphQL request as any script would send it; the whole answer."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(f"{self.url}/graphql", body, headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


@dataclass
class Watch:
    """What a browser context did that a test must not let pass."""

    foreign: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == "127.0.0.1"


def watch_context(context: Any) -> Watch:
    """Refuse and record every request to another host; record console errors."""
    watch = Watch()

    def route(route: Any) -> None:
        url = route.request.url
        watch.requests.append(url)
        if is_local(url):
            route.continue_()
        else:
            watch.foreign.append(url)
            route.abort()

    def websocket(ws: Any) -> None:
        watch.requests.append(ws.url)
        if is_local(ws.url):
            ws.connect_to_server()
        else:
            watch.foreign.append(ws.url)
            ws.close()

    context.route("**/*", route)
    context.route_web_socket("**/*", websocket)

    def on_page(page: Any) -> None:
        page.on(
            "console",
            lambda message: (
                watch.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: watch.console_errors.append(str(error)))

    context.on("page", on_page)
    return watch


def open_watched(browser: Any, url: str, viewport: dict[str, int] = DESKTOP) -> Any:
    """A page at ``url`` in a new context whose requests and console are watched (the
    watch is ``page.watch``)."""
    context = browser.new_context(viewport=viewport)
    watch = watch_context(context)
    page = context.new_page()
    page.watch = watch
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()
