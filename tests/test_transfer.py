"""``features-gql import`` and ``export``, run as real processes on real SQLite files."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from features_gql.api import FeaturesAPI
from features_gql.domain import FeatureFilter, Resource
from features_gql_plugins.sqlite_store import SQLiteStore
from tests.test_cli import CLI, clean_env, run_cli


def lines(*objects: Any) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objects)


def url(path: Path) -> str:
    return f"sqlite://{path}"


def run_import(
    path: Path, data: bytes, *extra: str, store: Path | None = None
) -> subprocess.CompletedProcess[str]:
    source = path.parent / f"{path.stem}-in.jsonl"
    source.write_bytes(data)
    return run_cli("import", str(source), "--store", url(store or path), *extra)


def state(path: Path) -> dict[str, Any]:
    """What a store holds, times aside: definitions, assignments, counts, the revision."""

    async def read() -> dict[str, Any]:
        store = SQLiteStore(str(path))
        await store.open()
        try:
            api = FeaturesAPI(store)
            features = await api.list_features(archived=None, first=1000)
            types = await api.resource_types()
            assignments: dict[str, list[str]] = {}
            for type_ in types:
                page = await api.list_resources(type_.name, first=1000)
                for resource, held in zip(
                    page.resources, await api.features_of_many(page.resources), strict=True
                ):
                    assignments[str(resource)] = held
            return {
                "features": [
                    (
                        f.name,
                        f.resource_count,
                        None
                        if f.definition is None
                        else (
                            f.definition.description,
                            f.definition.owner,
                            f.definition.kind,
                            f.definition.expires_at,
                            f.archived,
                        ),
                    )
                    for f in features.features
                ],
                "types": [(t.name, t.resource_count) for t in types],
                "assignments": assignments,
                "revision": await api.revision(),
            }
        finally:
            await store.close()

    return asyncio.run(read())


SAMPLE = lines(
    {
        "definition": {
            "name": "speedups",
            "description": "Faster pipelines.\nRolled out per team.",
            "owner": "team-ci",
            "kind": "OPS",
            "expiresAt": "2030-01-31T00:00:00Z",
        }
    },
    {"type": "pipeline", "id": "db8e9a0d", "feature": "speedups"},
    {"type": "pipeline", "id": '日本語 🚀 "q" / x', "feature": "speedups"},
    {"type": "repo", "id": "same", "feature": "beta"},
    {"definition": {"name": "legacy", "archived": True, "kind": "release"}},
    {"type": "pipeline", "id": "same", "feature": "legacy"},
)


def test_export_then_import_gives_the_same_state(tmp_path: Path) -> None:
    first = tmp_path / "first.db"
    imported = run_import(first, SAMPLE)
    assert imported.returncode == 0, imported.stderr
    assert "6 lines: 4 assignments, 2 definitions, 7 changes" in imported.stderr
    exported = run_cli("export", "--store", url(first))
    assert exported.returncode == 0, exported.stderr
    out = [orjson.loads(line) for line in exported.stdout.splitlines()]
    assert out[0] == {
        "definition": {
            "name": "legacy",
            "description": None,
            "owner": None,
            "kind": "release",
            "expiresAt": None,
            "archived": True,
        }
    }
    assert out[1]["definition"]["expiresAt"] == "2030-01-31T00:00:00.000Z"
    assert [tuple(o.values()) for o in out[2:]] == [  # ordered by (type, id, feature)
        ("pipeline", "db8e9a0d", "speedups"),
        ("pipeline", "same", "legacy"),
        ("pipeline", '日本語 🚀 "q" / x', "speedups"),
        ("repo", "same", "beta"),
    ]

    second = tmp_path / "second.db"
    again = run_import(second, exported.stdout.encode())
    assert again.returncode == 0, again.stderr
    assert state(second) == state(first)
    assert run_cli("export", "--store", url(second)).stdout == exported.stdout


def test_importing_twice_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "f.db"
    assert run_import(store, SAMPLE).returncode == 0
    before = state(store)
    again = run_import(store, SAMPLE)
    assert again.returncode == 0, again.stderr
    assert ", 0 changes" in again.stderr
    assert state(store) == before


def test_every_imported_change_is_logged_under_the_importers_name(tmp_path: Path) -> None:
    store = tmp_path / "f.db"
    assert run_import(store, SAMPLE, "--actor", "migration").returncode == 0

    async def log() -> list[tuple[str, str]]:
        sqlite = SQLiteStore(str(store))
        await sqlite.open()
        try:
            return [(c.op, c.actor or "") for c in await sqlite.changes_since(0, limit=100)]
        finally:
            await sqlite.close()

    assert asyncio.run(log()) == [
        ("define", "migration"),
        ("add", "migration"),
        ("add", "migration"),
        ("add", "migration"),
        ("define", "migration"),
        ("archive", "migration"),
        ("add", "migration"),
    ]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (b'{"type": "repo", "id": "x"}', "unknown line"),
        (b'{"type": "repo", "id": 7, "feature": "f"}', "must be strings"),
        (
            b'{"type": "repo", "id": "x", "feature": "Not A Slug"}',
            "feature must be a lowercase slug",
        ),
        (b'{"type": "Repo", "id": "x", "feature": "f"}', "type must be a lowercase slug"),
        (b'{"type": "repo", "id": "", "feature": "f"}', "id must be 1-256 characters"),
        (b'{"definition": {"name": "x", "colour": "red"}}', "unknown key(s) colour"),
        (b'{"definition": {"name": "x", "kind": "forever"}}', "kind must be one of"),
        (b'{"definition": {"name": "x", "expiresAt": "2030-01-01"}}', "time zone"),
        (b'{"definition": {"name": "Bad"}}', "definition.name"),
    ],
)
def test_a_bad_line_stops_the_import_after_the_lines_before_it(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    store = tmp_path / "f.db"
    good = [lines({"type": "repo", "id": f"r{i}", "feature": "f"}) for i in range(5)]
    # Batches of 2: lines 1-2 and 3-4 are whole batches; line 5 shares one with line 6.
    data = b"".join([*good, bad + b"\n", lines({"type": "repo", "id": "after", "feature": "f"})])
    result = run_import(store, data, "--batch", "2")
    assert result.returncode == 1
    assert "line 6: " in result.stderr
    assert reason in result.stderr
    assert "lines 1-5 were imported" in result.stderr
    assert "nothing from line 6 on" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(state(store)["assignments"]) == [f"repo/r{i}" for i in range(5)]


def test_strict_mode_stops_at_the_first_undefined_feature(tmp_path: Path) -> None:
    store = tmp_path / "f.db"
    config = tmp_path / "strict.toml"
    config.write_text("[catalog]\nstrict = true\n")
    data = lines(
        {"definition": {"name": "known"}},
        {"type": "repo", "id": "a", "feature": "known"},
        {"type": "repo", "id": "b", "feature": "known"},
        {"type": "repo", "id": "c", "feature": "unknown"},
        {"type": "repo", "id": "d", "feature": "known"},
    )
    result = run_import(store, data, "--config", str(config))
    assert result.returncode == 1
    assert "line 4: " in result.stderr
    assert "'unknown' is not defined" in result.stderr
    assert "lines 1-3 were imported" in result.stderr
    assert state(store)["assignments"] == {"repo/a": ["known"], "repo/b": ["known"]}


def test_a_store_failure_says_how_far_the_import_got(tmp_path: Path) -> None:
    config = tmp_path / "failing.toml"
    config.write_text(
        f"""
        [store]
        plugin = "failing"
        operations = ["add_many"]
        every_nth = 2
        [store.inner]
        plugin = "sqlite"
        path = "{tmp_path / "f.db"}"
        """
    )
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(lines({"type": "t", "id": str(i), "feature": "f"}) for i in range(5))
    )
    result = run_cli("import", str(source), "--config", str(config), "--batch", "2")
    assert result.returncode == 1
    assert "the store failed" in result.stderr
    assert "lines 1-2 were imported" in result.stderr
    assert "injected fault" in result.stderr


def test_import_reads_standard_input_and_export_writes_a_file(tmp_path: Path) -> None:
    store = tmp_path / "f.db"
    result = subprocess.run(
        [*CLI, "import", "-", "--store", url(store)],
        input=SAMPLE,
        capture_output=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.jsonl"
    assert run_cli("export", "--store", url(store), "-o", str(out)).returncode == 0
    assert len(out.read_bytes().splitlines()) == 6


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("import", str(tmp_path / "nope.jsonl"), "--store", url(tmp_path / "f.db"))
    assert result.returncode == 2
    assert "No such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_terminal_gets_a_progress_bar(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(SAMPLE)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [*CLI, "import", str(source), "--store", url(tmp_path / "f.db")],
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env=clean_env(),
    )
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(timeout=30) == 0
    text = seen.decode()
    assert "\r[" in text
    assert "100%" in text
    assert "4 assignments" in text


def test_a_pipe_gets_no_progress_bar(tmp_path: Path) -> None:
    result = run_import(tmp_path / "f.db", SAMPLE)
    assert "\r" not in result.stderr
    assert result.stderr.startswith("imported 6 lines")


def test_an_imported_store_answers_listings(tmp_path: Path) -> None:
    store = tmp_path / "f.db"
    data = b"".join(
        lines({"type": t, "id": f"{t}-{i:03}", "feature": f"f{i % 4}"})
        for t in ("app", "repo")
        for i in range(150)
    )
    assert run_import(store, data, "--batch", "64").returncode == 0

    async def check() -> None:
        sqlite = SQLiteStore(str(store))
        await sqlite.open()
        try:
            listed = await sqlite.list_features(
                FeatureFilter(datetime.now(UTC)), after=None, limit=9
            )
            assert [(f.name, f.resource_count) for f in listed] == [
                ("f0", 76),
                ("f1", 76),
                ("f2", 74),
                ("f3", 74),
            ]
            assert await sqlite.resource_count("repo") == 150
            page = await sqlite.list_resources("app", after="app-147", limit=5)
            assert page == [Resource("app", "app-148"), Resource("app", "app-149")]
            assert await sqlite.revision() == 300
        finally:
            await sqlite.close()

    asyncio.run(check())
