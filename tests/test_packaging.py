"""The package build (build_backend/setuptools_with_frontend.py): GraphiQL's browser files
are fetched with npm only when missing or stale, a build without npm that needs them says
so, and the sdist, and a wheel built from it with no Node anywhere, ship them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = Path("frontend/graphiql")
VENDOR = Path("features_gql/ui/graphiql/vendor")
FRONTEND_FILES = ("package.json", "package-lock.json", "assets.json")
#: A PATH holding this Python and nothing else: no node, no npm.
NO_NODE = {**os.environ, "PATH": str(Path(sys.executable).parent)}


def installed_files() -> list[str]:
    """The vendor files the working tree's build recorded in its stamp."""
    stamp = json.loads((ROOT / VENDOR / "installed.json").read_text())
    files: list[str] = stamp["files"]
    return files


def project_copy(into: Path, *, vendor: bool) -> Path:
    """What the build reads: the front-end manifest and lock, and the vendor folder."""
    for name in FRONTEND_FILES:
        (into / FRONTEND).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / FRONTEND / name, into / FRONTEND / name)
    if vendor:
        shutil.copytree(ROOT / VENDOR, into / VENDOR)
    return into


def ensure_assets(root: Path) -> subprocess.CompletedProcess[str]:
    """The hook's first step, as the build runs it: in the project root, without npm."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'build_backend')!r}); "
        "import setuptools_with_frontend as backend; backend.ensure_assets()"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=NO_NODE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_working_trees_files_are_current() -> None:
    """The files the tests serve are the ones the lock names (the install built them)."""
    stamp = json.loads((ROOT / VENDOR / "installed.json").read_text())
    lock = json.loads((ROOT / FRONTEND / "package-lock.json").read_text())
    for name, package in stamp["packages"].items():
        entry = next(
            entry
            for path, entry in lock["packages"].items()
            if path == f"node_modules/{name}" or path.endswith(f"/node_modules/{name}")
        )
        assert package["version"] == entry["version"], name
    assert ensure_assets(ROOT).returncode == 0


def test_current_files_need_no_npm(tmp_path: Path) -> None:
    root = project_copy(tmp_path, vendor=True)
    before = {name: (root / VENDOR / name).read_bytes() for name in installed_files()}
    done = ensure_assets(root)
    assert done.returncode == 0, done.stderr
    assert {name: (root / VENDOR / name).read_bytes() for name in installed_files()} == before
    assert not (root / FRONTEND / "node_modules").exists()


@pytest.mark.parametrize("damage", ["missing", "file gone", "lock changed"])
def test_without_npm_missing_or_stale_files_stop_the_build_with_one_message(
    tmp_path: Path, damage: str
) -> None:
    root = project_copy(tmp_path, vendor=damage != "missing")
    if damage == "file gone":
        (root / VENDOR / "graphiql.min.js").unlink()
    elif damage == "lock changed":
        lock = root / FRONTEND / "package-lock.json"
        lock.write_text(lock.read_text() + "\n")
    done = ensure_assets(root)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.startswith("features-gql build:")
    assert "npm is not installed" in message
    assert "Node.js" in message
    assert "from a wheel" in message


def _build_inputs(into: Path) -> Path:
    """The files the build reads, as a source checkout has them (nothing else: no .git,
    no virtual environment, no node_modules)."""
    into.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".mypy_cache")
    for name in ("pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copyfile(ROOT / name, into / name)
    for folder in ("features_gql", "plugins", "build_backend"):
        shutil.copytree(ROOT / folder, into / folder, ignore=ignore)
    project_copy(into, vendor=False)  # the vendor folder came with features_gql/
    return into


@pytest.mark.slow
def test_the_sdist_and_a_wheel_built_from_it_without_node_ship_the_files(
    tmp_path: Path,
) -> None:
    """``python -m build`` makes the sdist, then the wheel from the unpacked sdist, each in
    a fresh isolated environment, with no npm on the PATH."""
    source = _build_inputs(tmp_path / "source")
    dist = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        env=NO_NODE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "npm ci" not in done.stdout + done.stderr
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    expected = {f"{VENDOR}/{name}" for name in installed_files()}

    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        in_sdist = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    assert expected <= in_sdist
    assert {f"{FRONTEND}/{name}" for name in FRONTEND_FILES} <= in_sdist
    assert "build_backend/setuptools_with_frontend.py" in in_sdist
    assert not any("node_modules" in name for name in in_sdist)

    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        for name in expected:
            assert archive.read(name) == (ROOT / name).read_bytes(), name
    page = {
        f"features_gql/ui/graphiql/{name}"
        for name in ("index.html", "start.js", "page.css", "icon.svg")
    }
    assert page <= in_wheel
    assert f"{VENDOR}/installed.json" in in_wheel
    assert not any(name.startswith(("build_backend/", "frontend/")) for name in in_wheel)
