"""Normalising client caches keep resources apart: a real Apollo Client cache, in Node,
against the real service (tools/cache-check.mjs). The same id under two types is two
resources; Apollo's default cache key (__typename and id) merges them, the README's
recipes do not.

Needs Node and ``npm ci --prefix tools`` (``.ci/run`` does both, and sets
REQUIRE_NODE_TOOLS=1 so that a missing tool fails there instead of skipping).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import StartServer

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (TOOLS / "node_modules" / "@apollo" / "client").is_dir():
        if os.environ.get("REQUIRE_NODE_TOOLS"):
            pytest.fail("node and tools/node_modules are needed: npm ci --prefix tools")
        pytest.skip("needs node and `npm ci --prefix tools`")
    return node


async def test_a_real_apollo_cache_keeps_same_ids_of_different_types_apart(
    start_server: StartServer,
) -> None:
    node = _node()
    server = await start_server("memory")
    added = await server.gql(
        """mutation { addFeatures(items: [
            {resource: {type: "repo", id: "same"}, feature: "repo-only"},
            {resource: {type: "pipeline", id: "same"}, feature: "pipeline-only"}
        ]) { __typename } }"""
    )
    assert added.errors == []
    process = await asyncio.create_subprocess_exec(
        node,
        str(TOOLS / "cache-check.mjs"),
        f"{server.url}/graphql",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    read = json.loads(out)
    # Apollo's default key is Resource:same for both: the second answer overwrote the first.
    assert read["default"]["repo"] == read["default"]["pipeline"] == ["pipeline-only"]
    for recipe in ("typeAndId", "nodeId"):
        assert read[recipe] == {"repo": ["repo-only"], "pipeline": ["pipeline-only"]}, recipe
