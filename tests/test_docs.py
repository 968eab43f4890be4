"""The README's promises that can be checked mechanically."""

from __future__ import annotations

import re
from pathlib import Path

from features_gql import hookspecs
from features_gql.config import ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


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


def test_every_environment_variable_is_documented() -> None:
    for name in ENVIRONMENT:
        assert name in README, f"README does not document {name}"
