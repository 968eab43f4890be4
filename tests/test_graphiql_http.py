"""GraphiQL over HTTP: the page and every file it names come from the service, under a
strict Content-Security-Policy; the files' addresses carry a digest, so they are cached
for a year; switched off, neither the page nor its files are served."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web

from features_gql import FeaturesAPI
from features_gql.http import graphiql as graphiql_module
from features_gql.http import mount_graphql
from features_gql.http.app import request_context
from features_gql.http.graphiql import (
    CONTENT_SECURITY_POLICY,
    IMMUTABLE,
    REQUIRED,
    load_page_files,
)
from features_gql.http.ui import StaticFile
from features_gql_plugins.memory_store import MemoryStore
from tests.conftest import Server, StartServer, make_tokens

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


class References(HTMLParser):
    """Every address the page names (src, href), and any inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[str] = []
        self.inline: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self._tag = tag
        for key in ("src", "href"):
            if named.get(key) is not None:
                self.addresses.append(str(named[key]))
        if "style" in named or any(key.startswith("on") for key in named):
            self.inline.append(f"<{tag}> with {sorted(named)}")
        if tag == "style" or (tag == "script" and "src" not in named):
            self.inline.append(f"<{tag}>")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.inline.append(f"<script> {data.strip()[:40]}")


async def page_of(server: Server, path: str = "/graphql") -> tuple[aiohttp.ClientResponse, str]:
    async with server.session.get(f"{server.url}{path}", headers=HTML) as response:
        return response, await response.text()


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def test_the_policy_loosens_styles_only() -> None:
    policy = directives(CONTENT_SECURITY_POLICY)
    assert policy["default-src"] == ["'self'"]
    # No script-src: scripts fall back to 'self', with nothing inline and no eval.
    assert "script-src" not in policy
    assert "connect-src" not in policy
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["font-src"] == policy["img-src"] == ["'self'", "data:"]
    assert policy["object-src"] == policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


async def test_the_page_names_only_the_services_own_files(start_server: StartServer) -> None:
    tables, _ = make_tokens(ops="read")
    server = await start_server("memory", auth_tokens=tables)
    response, page = await page_of(server)
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Request-ID"]
    assert '<meta name="anonymous-access" content="none">' in page
    assert "{{" not in page
    parser = References()
    parser.feed(page)
    assert parser.inline == []
    named = set(parser.addresses)
    for required in REQUIRED:
        assert any(address.endswith(f"/{required}") for address in named), required
    page_url = f"{server.url}/graphql"
    digests = set()
    for address in named:
        assert not urlsplit(address).scheme, f"{address} names a scheme"
        assert not address.startswith(("/", "//")), f"{address} is not relative"
        resolved = urljoin(page_url, address)
        match = re.fullmatch(re.escape(server.url) + r"/graphiql/([0-9a-f]{16})/(.+)", resolved)
        assert match is not None, resolved
        digests.add(match.group(1))
        # No token: the files hold no data.
        async with server.session.get(resolved) as answer:
            assert answer.status == 200, resolved
            body = await answer.read()
            assert body
            expected = "text/css" if address.endswith(".css") else "text/javascript"
            if address.endswith(".svg"):
                expected = "image/svg+xml"
            assert answer.content_type == expected
            assert answer.headers["Cache-Control"] == IMMUTABLE
            assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            # Through the same middleware as every other path.
            assert answer.headers["X-Request-ID"]
    assert len(digests) == 1
    # The data is not served without the token.
    async with server.session.post(
        f"{server.url}/graphql", json={"query": "{ revision }"}
    ) as response:
        assert response.status == 401


async def test_the_page_says_anonymous_requests_may_read_when_they_may(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    _, page = await page_of(server)
    assert '<meta name="anonymous-access" content="read">' in page


async def test_an_unchanged_page_or_file_is_a_304(start_server: StartServer) -> None:
    server = await start_server("memory")
    response, page = await page_of(server)
    etag = response.headers["ETag"]
    async with server.session.get(
        f"{server.url}/graphql", headers={**HTML, "If-None-Match": etag}
    ) as response:
        assert response.status == 304
    script = re.search(r'src="(graphiql/[0-9a-f]+/start\.js)"', page)
    assert script is not None
    url = f"{server.url}/{script.group(1)}"
    async with server.session.get(url) as response:
        etag = response.headers["ETag"]
    async with server.session.get(url, headers={"If-None-Match": etag}) as response:
        assert response.status == 304
        assert await response.read() == b""
    async with server.session.head(url) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == IMMUTABLE


@pytest.mark.parametrize(
    "name",
    [
        "missing.js",
        "index.html",
        "vendor/installed.json",
        "vendor/licenses/react.LICENSE",
        "../ui/panel.js",
        "%2e%2e/%2e%2e/pyproject.toml",
        "vendor/../../../http/graphiql.py",
        "vendor",
    ],
)
async def test_nothing_but_the_pages_files_is_served(start_server: StartServer, name: str) -> None:
    server = await start_server("memory")
    _, page = await page_of(server)
    digest = re.search(r"graphiql/([0-9a-f]{16})/", page)
    assert digest is not None
    async with server.session.get(f"{server.url}/graphiql/{digest.group(1)}/{name}") as response:
        assert response.status == 404
        body = await response.json()
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_another_digest_is_not_served(start_server: StartServer) -> None:
    """An old page's files are gone with the version that had them: nothing is served
    under an address whose content could differ from what it was cached as."""
    server = await start_server("memory")
    async with server.session.get(f"{server.url}/graphiql/0000000000000000/start.js") as response:
        assert response.status == 404


async def test_other_methods_are_refused(start_server: StartServer) -> None:
    server = await start_server("memory")
    _, page = await page_of(server)
    script = re.search(r'src="(graphiql/[0-9a-f]+/start\.js)"', page)
    assert script is not None
    async with server.session.post(f"{server.url}/{script.group(1)}", data=b"x") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"


async def test_switched_off_neither_the_page_nor_its_files_are_served(
    start_server: StartServer,
) -> None:
    on = await start_server("memory")
    _, page = await page_of(on)
    files = re.findall(r'(?:src|href)="(graphiql/[^"]+)"', page)
    assert files
    off = await start_server("memory", graphiql=False)
    response, body = await page_of(off)
    assert response.status == 404
    assert "GraphiQL is switched off" in body
    assert response.headers["X-Request-ID"]
    for address in files:
        async with off.session.get(f"{off.url}/{address}") as answer:
            assert answer.status == 404, address
    # The API itself is served as before, GET and POST.
    assert (await off.gql("{ revision }")).data == {"revision": 0}
    async with off.session.get(
        f"{off.url}/graphql", params={"query": "{ revision }"}, headers=HTML
    ) as answer:
        assert (await answer.json())["data"] == {"revision": 0}


async def test_without_its_browser_files_the_page_says_so_and_the_api_is_served(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A source tree no build has prepared has the page but not the files from npm."""
    ours = {name: found for name, found in load_page_files().items() if "vendor/" not in name}
    monkeypatch.setattr(graphiql_module, "load_page_files", lambda: dict(ours))
    server = await start_server("memory")
    response, body = await page_of(server)
    assert response.status == 503
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "browser files are not installed" in body
    assert "npm" in body
    assert "--no-graphiql" in body
    assert "GraphiQL is not served" in caplog.text
    assert (await server.gql("{ revision }")).data == {"revision": 0}


async def test_an_embedding_application_gets_the_files_beside_its_endpoint() -> None:
    app = web.Application(middlewares=[request_context])
    mount_graphql(app, FeaturesAPI(MemoryStore(), deadline=0.5), path="/features/graphql")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/features/graphql", headers=HTML) as response:
                assert response.status == 200
                page = await response.text()
            addresses = re.findall(r'(?:src|href)="([^"]+)"', page)
            assert addresses
            for address in addresses:
                resolved = urljoin(f"{url}/features/graphql", address)
                assert resolved.startswith(f"{url}/features/graphiql/")
                async with session.get(resolved) as answer:
                    assert answer.status == 200, resolved
    finally:
        await runner.cleanup()


def test_the_digest_changes_with_any_file() -> None:
    files = load_page_files()
    first = graphiql_module.GraphiQLPage(files, anonymous_reads=False, route="/graphiql")
    changed = dict(files)
    old = files["page.css"]
    changed["page.css"] = StaticFile(old.body + b"\n", old.content_type, old.etag)
    second = graphiql_module.GraphiQLPage(changed, anonymous_reads=False, route="/graphiql")
    assert first.digest != second.digest
    assert first.page_file.body != second.page_file.body
