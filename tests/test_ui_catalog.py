"""The control panel's catalog, bulk change and live feed in real headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import ThreadedServer
from tests.conftest import make_tokens
from tests.test_ui import RESOURCE, assert_clean, find, open_panel, sign_in

MATRIX = (
    """query M($ids: [String!]!) { checkMatrix(type: "team", ids: $ids, features: ["beta"]) }"""
)


@pytest.fixture
def tokens() -> tuple[dict[str, Any], dict[str, str]]:
    return make_tokens(ops="read,write", auditor="read")


@pytest.fixture
def service(tokens: tuple[dict[str, Any], dict[str, str]]) -> Iterator[ThreadedServer]:
    server = ThreadedServer(auth_tokens=tokens[0]).start()
    yield server
    server.stop()


def test_bulk_add_to_100_ids_with_a_preview_and_per_item_results(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    secret = tokens[1]["ops"]
    ids = [f"team-{n:03d}" for n in range(100)]
    # Ten of them have it already: the preview says so, and only 90 change.
    service.gql(
        """mutation($items: [CheckInput!]!) { addFeatures(items: $items) { __typename } }""",
        {"items": [{"resource": {"type": "team", "id": i}, "feature": "beta"} for i in ids[:10]]},
        token=secret,
    )
    page = open_panel(browser, service)
    sign_in(page, secret)
    page.get_by_text("Signed in as ops").wait_for()
    page.get_by_role("link", name="Bulk change").click()
    page.get_by_label("Feature").fill("beta")
    page.get_by_label("Type").fill("team")
    page.get_by_label("Ids, one a line").fill("\n".join([*ids, ids[0], ""]))
    page.get_by_role("button", name="Preview").click()
    status = page.get_by_role("status")
    status.get_by_text("would change 90 of 100 team resources; 10 already have it").wait_for()
    page.get_by_role("button", name="Apply").click()
    status.get_by_text("Added beta: 90 of 100 changed").wait_for()
    assert page.locator("tbody tr").count() == 100
    assert page.locator("tbody tr", has_text="unchanged").count() == 10
    rows = service.gql(MATRIX, {"ids": ids}, token=secret)["data"]["checkMatrix"]
    assert rows == [[True]] * 100
    assert_clean(page.watch, service)
    page.context.close()


def test_a_second_browser_sees_the_first_ones_change_arrive_live(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    secret = tokens[1]["ops"]
    watcher = open_panel(browser, service)
    sign_in(watcher, tokens[1]["auditor"])
    find(watcher, RESOURCE["type"], RESOURCE["id"])
    watcher.get_by_text("This resource has no features.").wait_for()
    watcher.get_by_text("Live", exact=True).wait_for()

    actor = open_panel(browser, service)
    sign_in(actor, secret)
    find(actor, RESOURCE["type"], RESOURCE["id"])
    actor.get_by_label("Feature", exact=True).fill("speedups")
    actor.get_by_role("button", name="Add feature").click()

    # No reload: the subscription brings it.
    watcher.locator("ul.features li", has_text="speedups").wait_for()
    watcher.get_by_text("Live: speedups turned on by ops (revision 1).").wait_for()
    assert watcher.locator("#revision").text_content() == "1"
    assert_clean(watcher.watch, service)
    assert_clean(actor.watch, service)
    assert any(url.startswith("ws://127.0.0.1") for url in watcher.watch.requests)
    watcher.context.close()
    actor.context.close()


def test_the_catalog_is_searchable_warns_of_expiry_and_defines_features(
    browser: Any, service: ThreadedServer, tokens: tuple[dict[str, Any], dict[str, str]]
) -> None:
    secret = tokens[1]["ops"]
    define = """mutation($input: FeatureDefinitionInput!) {
      defineFeature(input: $input) { __typename } }"""
    service.gql(
        define,
        {
            "input": {
                "name": "old-checkout",
                "owner": "payments",
                "expiresAt": "2001-01-01T00:00:00Z",
            }
        },
        token=secret,
    )
    service.gql(define, {"input": {"name": "dark-mode", "kind": "RELEASE"}}, token=secret)
    page = open_panel(browser, service)
    sign_in(page, secret)
    page.get_by_role("link", name="Features").click()
    page.get_by_role("row", name="old-checkout").get_by_text("expired").wait_for()
    page.get_by_label("Search").fill("dark")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="dark-mode").wait_for()
    assert page.get_by_role("link", name="old-checkout").count() == 0

    page.get_by_role("link", name="dark-mode").click()
    page.get_by_label("Owner").fill("web")
    page.get_by_role("button", name="Save definition").click()
    page.get_by_role("status").get_by_text("Saved: revision 3.").wait_for()
    owner = service.gql('{ feature(name: "dark-mode") { owner } }', token=secret)
    assert owner["data"] == {"feature": {"owner": "web"}}

    page.get_by_role("link", name="History of this feature").click()
    page.get_by_role("cell", name="define").first.wait_for()
    assert page.locator("tbody tr").count() == 2
    assert_clean(page.watch, service)
    page.context.close()
