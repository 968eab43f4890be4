"""The README's promises that can be checked mechanically."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from features_gql import hookspecs, settings_table
from features_gql.config import ENVIRONMENT, TOML_KEYS
from tests.conftest import StartServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()
JSON = "application/json"


def test_first_screen_has_exactly_two_commands() -> None:
    first_screen = README.split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", first_screen, re.S)
    assert len(blocks) == 2
    install_and_serve, install_and_test = (block.strip() for block in blocks)
    assert install_and_serve.endswith("features-gql serve")
    assert install_and_test == (
        'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/pytest'
    )


def test_ci_runs_the_readme_test_command() -> None:
    for step in ("python3 -m venv .venv", '-e ".[dev]"', ".venv/bin/pytest"):
        assert step in CI


def test_every_hook_is_documented() -> None:
    hooks = [name for name in vars(hookspecs) if name.startswith("features_gql_")]
    assert hooks
    for hook in hooks:
        assert f"`{hook}(" in README, f"README does not document {hook}"


def test_the_configuration_table_is_made_from_the_declarations() -> None:
    assert settings_table.update(README) == README, (
        "the README's configuration table is out of date: run python -m features_gql.settings_table"
    )
    table = README.split(settings_table.START, 1)[1].split(settings_table.END, 1)[0]
    for name in ENVIRONMENT:
        assert f"`{name}" in table, name
    for section, keys in TOML_KEYS.items():
        for key in keys:
            assert f"`[{section}] {key}`" in table or section == "limits", (section, key)


def test_the_settings_table_command_checks_and_rewrites(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    stale = README.replace("`FEATURES_GQL_HOST`", "`FEATURES_GQL_HOTS`", 1)
    readme.write_text(stale)
    assert settings_table.main([str(readme), "--check"]) == 1
    assert readme.read_text() == stale
    assert settings_table.main([str(readme)]) == 0
    assert readme.read_text() == README
    assert settings_table.main([str(readme), "--check"]) == 0


def test_every_environment_variable_is_documented() -> None:
    for name in ENVIRONMENT:
        assert name in README, f"README does not document {name}"


def _readme_file(name: str) -> str:
    """The README code block that is the file ``name`` (its first line is ``# name``)."""
    for block in re.findall(r"```(?:python|toml)\n(.*?)```", README, re.S):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"the README shows no {name}")


@pytest.fixture
def walkthrough(tmp_path: Path) -> Path:
    """The plugin walkthrough's files, as the README shows them, in one directory."""
    for name in ("my_store.py", "test_my_store.py", "pyproject.toml"):
        (tmp_path / name).write_text(_readme_file(name))
    return tmp_path


def test_the_plugin_walkthrough_loads_from_a_plugins_directory(walkthrough: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "features_gql.cli", "plugins", "--plugins-dir", str(walkthrough)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "my_store.py  (local)" in listed.stdout
    assert "store:   redis [redis://] - Redis hashes" in listed.stdout
    assert "test_my_store" not in listed.stdout
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=walkthrough,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "test_my_store.py::TestRedisStore::test_data_survives_reopening" in collected.stdout


def test_the_plugin_walkthrough_packages_its_module_and_entry_point(walkthrough: Path) -> None:
    pytest.importorskip("setuptools")  # the build backend the walkthrough's package names
    built = subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "egg_info"],
        cwd=walkthrough,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    metadata = walkthrough / "features_gql_redis.egg-info"
    assert (metadata / "top_level.txt").read_text().split() == ["my_store"]
    assert "[features_gql]\nredis = my_store" in (metadata / "entry_points.txt").read_text()


def test_every_config_file_key_is_documented() -> None:
    for section, keys in TOML_KEYS.items():
        for key in keys:
            assert f"`[{section}] {key}`" in README, f"README does not document [{section}] {key}"


def test_serve_help_lists_every_setting_that_is_not_an_option() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "features_gql.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    for name in ENVIRONMENT:
        assert name in shown.stdout
    for section, keys in TOML_KEYS.items():
        assert f"[{section}]" in shown.stdout
        for key in keys:
            assert re.search(rf"\b{key}\b", shown.stdout), key
    assert "admin_token" in shown.stdout


async def test_every_http_error_code_is_in_the_readme_table(start_server: StartServer) -> None:
    server = await start_server("memory")
    graphql = f"{server.url}/graphql"
    requests = [
        ("POST", graphql, {"data": b"{not json", "headers": {"Content-Type": JSON}}, 400),
        ("POST", graphql, {"data": b'{"variables": {}}', "headers": {"Content-Type": JSON}}, 400),
        (
            "POST",
            graphql,
            {"data": b"{ revision }", "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        ("PUT", graphql, {"json": {"query": "{ revision }"}}, 405),
        ("POST", f"{server.url}/admin/faults", {"json": {"outage": True}}, 403),
    ]
    table = README.split("A request that never reaches GraphQL", 1)[1].split("\n\n", 2)[1]
    for method, url, options, status in requests:
        async with server.session.request(method, url, **options) as response:
            assert response.status == status
            body = await response.json(content_type=None)
        (error,) = body["errors"]
        assert f"| `{error['extensions']['code']}` | {status} |" in table, error


def test_the_drills_keep_the_admin_token_in_one_place() -> None:
    drill = (ROOT / "docs" / "fault-injection.md").read_text()
    paths = set(re.findall(r"/tmp/[\w.-]*token", README + drill))
    assert paths == {"/tmp/features-admin-token"}
