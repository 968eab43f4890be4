"""GraphiQL in real headless Chromium, loaded from the service with every request held to
127.0.0.1 (tests/browser.py refuses any other host) and no console error allowed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import ThreadedServer, Watch, open_watched
from tests.conftest import make_tokens

RESOURCE = {"type": "pipeline", "id": "db8e9a0d-b9b1-4e7a-ab21-a2b289da032b"}
ADD = """mutation Add($r: ResourceInput!, $f: String!) {
  addFeature(resource: $r, feature: $f) { ... on FeatureChange { revision } } }"""


@pytest.fixture
def tokens() -> tuple[dict[str, Any], dict[str, str]]:
    return make_tokens(ops="read,write")


def serve(browser: Any, **settings: Any) -> Iterator[ThreadedServer]:
    server = ThreadedServer(**settings).start()
    yield server
    for context in browser.contexts:
        context.close()
    server.stop()


@pytest.fixture
def guarded(
    browser: Any, tokens: tuple[dict[str, Any], dict[str, str]]
) -> Iterator[ThreadedServer]:
    """The service with tokens: a request without one may not read."""
    yield from serve(browser, auth_tokens=tokens[0])


@pytest.fixture
def open_service(browser: Any) -> Iterator[ThreadedServer]:
    """No tokens: requests from loopback may read and write."""
    yield from serve(browser)


def open_graphiql(browser: Any, server: ThreadedServer) -> Any:
    return open_watched(browser, f"{server.url}/graphql")


def editor(page: Any, css: str) -> Any:
    return page.locator(f"{css} .graphiql-editor:not(.hidden) .CodeMirror")


def replace_text(page: Any, css: str, text: str) -> None:
    """Type into one of GraphiQL's editors, as a person pasting would."""
    editor(page, css).click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def result(page: Any) -> Any:
    return page.locator(".graphiql-response")


def shown(answer: Any) -> Any:
    """The answer in the result pane (which indents with no-break spaces)."""
    return json.loads(answer.inner_text().replace("\xa0", " "))


def assert_clean(watch: Watch, server: ThreadedServer) -> None:
    assert watch.console_errors == []
    assert watch.foreign == []
    here = urlsplit(server.url).netloc
    assert all(urlsplit(url).netloc == here for url in watch.requests), watch.requests
    assert any(urlsplit(url).path.startswith("/graphiql/") for url in watch.requests)


def test_a_token_in_the_headers_tab_runs_a_query(
    browser: Any, guarded: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    secret = tokens[1]["ops"]
    guarded.gql(ADD, {"r": RESOURCE, "f": "speedups"}, token=secret)
    page = open_graphiql(browser, guarded)
    # Without a token the schema cannot be read: the page says what to do instead of
    # sending a request the service would refuse.
    result(page).get_by_text("This service needs a token").wait_for()
    assert page.watch.requests.count(f"{guarded.url}/graphql") == 1, "the page alone"

    page.get_by_role("button", name="Headers", exact=True).click()
    replace_text(page, ".graphiql-editor-tool", json.dumps({"Authorization": f"Bearer {secret}"}))
    query = (
        "{ viewer { name } hasFeature(resource: "
        f'{{type: "{RESOURCE["type"]}", id: "{RESOURCE["id"]}"}}, feature: "speedups") }}'
    )
    replace_text(page, ".graphiql-query-editor", query)
    page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    answer = result(page)
    answer.get_by_text('"ops"').wait_for()
    assert shown(answer) == {"data": {"viewer": {"name": "ops"}, "hasFeature": True}}

    # With the token, the schema loads: the documentation lists the query type's fields.
    page.get_by_role("button", name="Re-fetch GraphQL schema").click()
    page.get_by_role("button", name="Show Documentation Explorer").click()
    page.get_by_role("link", name="Query").first.click()
    page.locator(".graphiql-doc-explorer").get_by_text("hasFeature").first.wait_for()

    # The token outlives neither the tab nor the page: GraphiQL's history (which records
    # headers) is in the tab's sessionStorage, and nothing of GraphiQL's in localStorage.
    assert page.evaluate("Object.keys(localStorage)") == []
    history = page.evaluate("sessionStorage.getItem('graphiql:queries')")
    assert history is not None
    assert page.evaluate("sessionStorage.getItem('graphiql:shouldPersistHeaders')") == "false"
    assert page.context.cookies() == []
    assert secret not in page.url
    # GraphiQL offers no switch to persist headers when the page says not to.
    page.get_by_role("button", name="Open settings dialog").click()
    page.get_by_role("dialog").get_by_text("Clear storage").wait_for()
    assert page.get_by_text("Persist headers").count() == 0
    # A new page of the same browser starts without it.
    later = page.context.new_page()
    later.goto(f"{guarded.url}/graphql")
    result(later).get_by_text("This service needs a token").wait_for()
    saved = later.evaluate(
        "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert secret not in saved
    assert_clean(page.watch, guarded)
    page.context.close()


def test_anonymous_reads_run_the_starting_query_and_the_explorer_shows_the_schema(
    browser: Any, open_service: ThreadedServer
) -> None:
    page = open_graphiql(browser, open_service)
    page.get_by_role("button", name="Show GraphiQL Explorer").click()
    explorer = page.locator(".graphiql-explorer-root")
    explorer.get_by_text("hasFeature").first.wait_for()
    editor(page, ".graphiql-query-editor").click()
    page.keyboard.press("Control+Enter")
    answer = result(page)
    answer.get_by_text('"anonymous"').wait_for()
    body = shown(answer)
    assert body["data"]["viewer"] == {"name": "anonymous", "scopes": ["read", "write"]}
    assert body["data"]["revision"] == 0
    assert_clean(page.watch, open_service)
    page.context.close()
