"""The package's PEP 517 build backend: setuptools, once GraphiQL's browser files are in place.

GraphiQL, React and GraphiQL's explorer plugin are front-end dependencies, declared in
``frontend/graphiql/package.json`` and pinned by its ``package-lock.json``; they are never
copied into the repository. Before setuptools builds a wheel, an editable install or an
sdist, this backend makes sure ``features_gql/ui/graphiql/vendor/`` holds the files that
``frontend/graphiql/assets.json`` names (the publishers' own minified browser builds, their
stylesheets and licence files), fetched by ``npm ci`` from the package registry:

* already there, and built from the same ``package.json``, lock file and ``assets.json``
  (the stamp ``vendor/installed.json`` records their hash): nothing to do, npm is not
  needed. This is the case when a wheel is built from the sdist, which ships the files.
* missing or stale: ``npm ci --ignore-scripts`` in a temporary directory (no package's
  install script runs; only files are copied), then the named files replace the folder.
* missing or stale, and npm is not installed: the build stops with one message saying so.

setuptools then puts the folder into the wheel and the sdist as package data
(``[tool.setuptools.package-data]`` in pyproject.toml).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (every other hook, unchanged)

#: Paths relative to the project root, the working directory of every PEP 517 hook.
FRONTEND = Path("frontend/graphiql")
VENDOR = Path("features_gql/ui/graphiql/vendor")
STAMP = "installed.json"
#: What the stamp's hash covers: a change to any of them means the files must be rebuilt.
SOURCES = ("package.json", "package-lock.json", "assets.json")


class FrontendBuildError(SystemExit):
    """The build cannot get GraphiQL's files. A SystemExit, so that pip shows the message
    alone rather than under a traceback of this module."""

    def __init__(self, message: str) -> None:
        super().__init__(f"\nfeatures-gql build: {message}\n")


def source_hash(root: Path = Path()) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        path = root / FRONTEND / name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _assets(root: Path) -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads((root / FRONTEND / "assets.json").read_text())
    return data


def _targets(assets: dict[str, dict[str, str]]) -> list[str]:
    """The files the vendor folder must hold, relative to it."""
    return [*assets["files"], *(f"licenses/{name}.LICENSE" for name in assets["licenses"])]


def assets_are_current(root: Path = Path()) -> bool:
    """Whether the vendor folder was built from the current package.json, lock and
    assets.json, and still holds every file."""
    stamp = root / VENDOR / STAMP
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("source_sha256") != source_hash(root):
        return False
    return all((root / VENDOR / name).is_file() for name in _targets(_assets(root)))


def _package_of(path: str) -> str:
    """The folder, under node_modules, of the package that a file there belongs to: e.g.
    ``@graphiql/plugin-explorer/node_modules/graphiql-explorer`` for its LICENSE."""
    parts = path.split("/")
    start = 0
    while True:
        end = start + (2 if parts[start].startswith("@") else 1)
        if end + 1 < len(parts) and parts[end] == "node_modules":
            start = end + 1  # a copy nested under the package that needs it
        else:
            return "/".join(parts[:end])


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise FrontendBuildError(
            f"GraphiQL's browser files ({VENDOR}/) are missing or out of date, and npm is "
            "not installed. Building or installing features-gql from source fetches them "
            f"with `npm ci` ({FRONTEND}/package-lock.json): install Node.js and npm "
            "(e.g. `apt-get install nodejs npm`) and try again, or install features-gql "
            "from a wheel, which ships them and needs no Node."
        )
    return npm


def build_assets(root: Path = Path()) -> None:
    """Fetch the locked packages with npm and copy the named files into the vendor folder."""
    npm = _npm()
    assets = _assets(root)
    lock = json.loads((root / FRONTEND / "package-lock.json").read_text())
    with tempfile.TemporaryDirectory(prefix="features-gql-graphiql-") as scratch:
        work = Path(scratch)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(root / FRONTEND / name, work / name)
        print(f"features-gql build: npm ci for GraphiQL's browser files ({FRONTEND})", flush=True)
        command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        # npm's messages go to stderr: stdout may be the build frontend's protocol channel.
        done = subprocess.run(command, cwd=work, stdout=sys.stderr, check=False)
        if done.returncode != 0:
            raise FrontendBuildError(
                f"`npm ci` failed (exit status {done.returncode}) fetching GraphiQL's "
                f"browser files for {FRONTEND}/package-lock.json; its messages are above. "
                "It needs the npm registry (or a configured mirror)."
            )
        modules = work / "node_modules"
        staged = work / "vendor"
        copies = {
            **assets["files"],
            **{f"licenses/{name}.LICENSE": path for name, path in assets["licenses"].items()},
        }
        packages: dict[str, dict[str, Any]] = {}
        for target, source in copies.items():
            origin = modules / source
            if not origin.is_file():
                raise FrontendBuildError(
                    f"{FRONTEND}/assets.json names {source}, which the locked packages do "
                    "not contain: update assets.json to the packages' layout."
                )
            (staged / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, staged / target)
            folder = _package_of(source)
            entry = lock["packages"].get(f"node_modules/{folder}", {})
            packages[folder.rsplit("node_modules/", 1)[-1]] = {
                "version": entry.get("version"),
                "license": entry.get("license"),
            }
        stamp = {
            "source_sha256": source_hash(root),
            "packages": dict(sorted(packages.items())),
            "files": sorted(copies),
        }
        (staged / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        target_dir = root / VENDOR
        if target_dir.exists():
            shutil.rmtree(target_dir)
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, target_dir)


def ensure_assets(root: Path = Path()) -> None:
    if not assets_are_current(root):
        build_assets(root)


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    ensure_assets()
    return build_meta.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    ensure_assets()
    return build_meta.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    ensure_assets()
    return build_meta.build_sdist(sdist_directory, config_settings)
