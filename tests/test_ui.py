"""The control panel in real headless Chromium: sign in, find, flip, read-only, phone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import (
    DESKTOP,
    PHONE,
    SCREENSHOTS,
    ThreadedServer,
    Watch,
    open_watched,
)
from tests.conftest import make_tokens

RESOURCE = {"type": "pipeline", "id": "db8e9a0d-b9b1-4e7a-ab21-a2b289da032b"}
HAS = """query Has($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"""
ADD = """mutation Add($r: ResourceInput!, $f: String!) {
  addFeature(resource: $r, feature: $f) { ... on FeatureChange { revision } } }"""


@pytest.fixture
def tokens() -> tuple[dict[str, Any], dict[str, str]]:
    return make_tokens(ops="read,write", auditor="read")


@pytest.fixture
def service(
    browser: Any, tokens: tuple[dict[str, Any], dict[str, str]]
) -> Iterator[ThreadedServer]:
    server = ThreadedServer(auth_tokens=tokens[0]).start()
    yield server
    # A page left open (a failed test) holds its subscription open: close it first.
    for context in browser.contexts:
        context.close()
    server.stop()


def open_panel(browser: Any, server: ThreadedServer, viewport: dict[str, int] = DESKTOP) -> Any:
    return open_watched(browser, f"{server.url}/ui/", viewport)


def sign_in(page: Any, secret: str) -> None:
    page.get_by_label("Token").fill(secret)
    page.get_by_role("button", name="Sign in").click()


def find(page: Any, type_: str, id_: str) -> None:
    page.get_by_label("Type").fill(type_)
    page.get_by_label("Id", exact=True).fill(id_)
    page.get_by_role("button", name="Find").click()


def assert_clean(watch: Watch, server: ThreadedServer) -> None:
    assert watch.console_errors == []
    assert watch.foreign == []
    assert any(url == f"{server.url}/graphql" for url in watch.requests)
    here = urlsplit(server.url).netloc
    assert all(urlsplit(url).netloc == here for url in watch.requests)


def test_sign_in_find_flip_and_the_api_sees_it(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    secret = tokens[1]["ops"]
    for feature in ("speedups", "beta-ui"):
        service.gql(ADD, {"r": RESOURCE, "f": feature}, token=secret)
    page = open_panel(browser, service)
    sign_in(page, secret)
    page.get_by_text("Signed in as ops").wait_for()
    assert page.locator("#viewer .scopes").text_content() == "read, write"

    find(page, RESOURCE["type"], RESOURCE["id"])
    speedups = page.get_by_role("switch", name="speedups")
    assert speedups.is_checked()
    assert page.get_by_role("switch", name="beta-ui").is_checked()

    speedups.click()
    outcome = page.get_by_role("status")
    outcome.get_by_text("speedups turned off: revision 3 by ops").wait_for()
    assert not speedups.is_checked()
    assert service.gql(HAS, {"r": RESOURCE, "f": "speedups"}, token=secret)["data"] == {
        "hasFeature": False
    }

    page.get_by_label("Feature", exact=True).fill("dark-mode")
    page.get_by_role("button", name="Add feature").click()
    outcome.get_by_text("dark-mode turned on: revision 4 by ops").wait_for()
    assert page.get_by_role("switch", name="dark-mode").is_checked()
    assert service.gql(HAS, {"r": RESOURCE, "f": "dark-mode"}, token=secret)["data"] == {
        "hasFeature": True
    }
    page.locator("#revision").get_by_text("4").wait_for()
    page.screenshot(path=SCREENSHOTS / "control-panel-desktop.png", full_page=True)

    # The token lives in sessionStorage only: not in a cookie, not in the address.
    assert page.evaluate("sessionStorage.getItem('features-gql.token')") == secret
    assert page.context.cookies() == []
    assert secret not in page.url
    assert_clean(page.watch, service)
    page.context.close()


def test_a_read_only_token_sees_no_switches(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    service.gql(ADD, {"r": RESOURCE, "f": "speedups"}, token=tokens[1]["ops"])
    page = open_panel(browser, service)
    sign_in(page, tokens[1]["auditor"])
    page.get_by_text("Signed in as auditor").wait_for()
    find(page, RESOURCE["type"], RESOURCE["id"])
    page.locator("ul.features li", has_text="speedups").wait_for()
    assert page.get_by_role("switch").count() == 0
    assert page.get_by_role("button", name="Add feature").count() == 0
    assert page.get_by_label("Feature", exact=True).count() == 0
    assert_clean(page.watch, service)
    page.context.close()


def test_the_keyboard_alone_signs_in_finds_and_flips(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    secret = tokens[1]["ops"]
    service.gql(ADD, {"r": RESOURCE, "f": "speedups"}, token=secret)
    page = open_panel(browser, service)
    page.get_by_label("Token").focus()
    page.keyboard.type(secret)
    page.keyboard.press("Enter")
    page.get_by_text("Signed in as ops").wait_for()
    # The resource form takes the focus when the view opens.
    page.keyboard.type(RESOURCE["type"])
    page.keyboard.press("Tab")
    page.keyboard.type(RESOURCE["id"])
    page.keyboard.press("Enter")
    switch = page.get_by_role("switch", name="speedups")
    switch.wait_for()
    switch.focus()
    page.keyboard.press("Space")
    page.get_by_role("status").get_by_text("speedups turned off").wait_for()
    assert service.gql(HAS, {"r": RESOURCE, "f": "speedups"}, token=secret)["data"] == {
        "hasFeature": False
    }
    assert_clean(page.watch, service)
    page.context.close()


def test_a_phone_sees_the_whole_panel_without_scrolling_sideways(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    secret = tokens[1]["ops"]
    for feature in ("speedups", "beta-ui", "new-billing"):
        service.gql(ADD, {"r": RESOURCE, "f": feature}, token=secret)
    page = open_panel(browser, service, PHONE)
    sign_in(page, secret)
    find(page, RESOURCE["type"], RESOURCE["id"])
    page.get_by_role("switch", name="new-billing").wait_for()
    page.locator("#revision").get_by_text("3").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for control in ("Type", "Token"):
        box = page.get_by_label(control).bounding_box()
        if box is not None:
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= PHONE["width"]
    page.screenshot(path=SCREENSHOTS / "control-panel-phone.png", full_page=True)
    assert_clean(page.watch, service)
    page.context.close()


def test_an_unknown_token_is_refused_and_not_kept(browser: Any, service: ThreadedServer) -> None:
    page = open_panel(browser, service)
    page.get_by_text("Not signed in.").wait_for()
    sign_in(page, "not-a-token-of-this-service")
    page.get_by_role("alert").get_by_text("not known").wait_for()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.get_by_role("switch").count() == 0
    # The browser reports each refused request (HTTP 401) as a console error; nothing else.
    assert all("401" in error for error in page.watch.console_errors)
    assert page.watch.foreign == []
    page.context.close()


def test_anonymous_on_loopback_without_tokens_may_write(browser: Any) -> None:
    server = ThreadedServer().start()
    try:
        page = open_panel(browser, server)
        page.get_by_text("Anonymous (no token)").wait_for()
        assert page.locator("#viewer .scopes").text_content() == "read, write"
        find(page, "team", "a")
        page.get_by_label("Feature", exact=True).fill("speedups")
        page.get_by_role("button", name="Add feature").click()
        page.get_by_role("status").get_by_text(
            "speedups turned on: revision 1 by anonymous"
        ).wait_for()
        assert_clean(page.watch, server)
        page.context.close()
    finally:
        server.stop()


def test_a_second_browser_sees_the_first_ones_change_arrive_live(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    watcher = open_panel(browser, service)
    sign_in(watcher, tokens[1]["auditor"])
    find(watcher, RESOURCE["type"], RESOURCE["id"])
    watcher.get_by_text("This resource has no features.").wait_for()
    watcher.get_by_text("Live", exact=True).wait_for()

    actor = open_panel(browser, service)
    sign_in(actor, tokens[1]["ops"])
    find(actor, RESOURCE["type"], RESOURCE["id"])
    actor.get_by_label("Feature", exact=True).fill("speedups")
    actor.get_by_role("button", name="Add feature").click()

    # No reload: the subscription brings it, with its actor and revision.
    watcher.locator("ul.features li", has_text="speedups").wait_for()
    watcher.get_by_text("Live: speedups turned on by ops (revision 1).").wait_for()
    assert watcher.locator("#revision").text_content() == "1"
    assert any(url.startswith("ws://127.0.0.1") for url in watcher.watch.requests)
    assert_clean(watcher.watch, service)
    assert_clean(actor.watch, service)
