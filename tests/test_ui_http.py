"""The control panel's files over HTTP: served without a token, from memory, with a
strict Content-Security-Policy, and nothing else under /ui."""

from __future__ import annotations

import pytest

from features_gql.http.ui import CONTENT_SECURITY_POLICY, load_static_files
from tests.conftest import StartServer, make_tokens


def test_the_package_ships_every_file_the_page_names() -> None:
    files = load_static_files()
    page = files["index.html"].body.decode()
    for name in ("panel.js", "panel.css", "icon.svg"):
        assert name in files
        assert f'"{name}"' in page
    modules = [name for name in files if name.endswith(".js")]
    for name in modules:
        body = files[name].body.decode()
        for line in body.splitlines():
            if line.startswith("import ") and " from " in line:
                target = line.split(" from ")[1].strip(' ";')
                base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
                parts = (base + target.removeprefix("./")).split("/")
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part != ".":
                        resolved.append(part)
                assert "/".join(resolved) in files, f"{name} imports a missing {target}"


async def test_the_page_needs_no_token_and_carries_a_strict_policy(
    start_server: StartServer,
) -> None:
    tables, _ = make_tokens(ops="read,write")
    server = await start_server("memory", auth_tokens=tables)
    async with server.session.get(f"{server.url}/ui/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Request-ID"]
        page = await response.text()
    # No inline script or style for the policy to refuse.
    assert "<script>" not in page
    assert "<style" not in page
    assert " style=" not in page
    assert '<meta name="anonymous-access" content="none">' in page
    async with server.session.get(f"{server.url}/ui/views/resource.js") as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    # The data is not: the API still wants the token.
    async with server.session.post(
        f"{server.url}/graphql", json={"query": "{ revision }"}
    ) as response:
        assert response.status == 401


async def test_the_page_says_anonymous_requests_may_read_when_they_may(
    start_server: StartServer,
) -> None:
    server = await start_server("memory")
    async with server.session.get(f"{server.url}/ui/") as response:
        assert '<meta name="anonymous-access" content="read">' in await response.text()


async def test_an_unchanged_file_is_a_304(start_server: StartServer) -> None:
    server = await start_server("memory")
    async with server.session.get(f"{server.url}/ui/panel.js") as response:
        etag = response.headers["ETag"]
        assert response.headers["Cache-Control"] == "no-cache"
    async with server.session.get(
        f"{server.url}/ui/panel.js", headers={"If-None-Match": etag}
    ) as response:
        assert response.status == 304
        assert await response.read() == b""
    async with server.session.get(
        f"{server.url}/ui/panel.js", headers={"If-None-Match": '"other"'}
    ) as response:
        assert response.status == 200


async def test_ui_without_a_slash_redirects_to_the_page(start_server: StartServer) -> None:
    server = await start_server("memory")
    async with server.session.get(f"{server.url}/ui", allow_redirects=False) as response:
        assert response.status == 308
        assert response.headers["Location"] == "/ui/"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/missing.js",
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/views/../../http/ui.py",
        "/ui/__init__.py",
        "/ui/views",
    ],
)
async def test_nothing_but_the_panels_files_is_served(start_server: StartServer, path: str) -> None:
    server = await start_server("memory")
    async with server.session.get(f"{server.url}{path}") as response:
        assert response.status == 404
        body = await response.json()
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_other_methods_are_refused(start_server: StartServer) -> None:
    server = await start_server("memory")
    async with server.session.post(f"{server.url}/ui/", data=b"x") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"
        assert (await response.json())["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


async def test_the_panel_can_be_switched_off(start_server: StartServer) -> None:
    server = await start_server("memory", ui=False)
    async with server.session.get(f"{server.url}/ui/") as response:
        assert response.status == 404
