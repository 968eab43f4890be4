"""A primary and an edge as real processes on 127.0.0.1: the outage drill (kill -9 of the
primary, a restart of the edge during the outage) and the data-loss drill (the primary
restored from an older backup). Each test prints what it counted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import clean_env, free_port

CLI = [sys.executable, "-m", "features_gql.cli", "serve", "--log-level", "WARNING"]
HAS = 'query ($id: String!, $f: String!) { hasFeature(resource: {type: "pipeline", id: $id}, feature: $f) }'  # noqa: E501
WRITE = (
    'mutation ($id: String!, $f: String!) { %s(resource: {type: "pipeline", id: $id}, '
    "feature: $f) { ... on FeatureChange { changed revision } } }"
)


class Process:
    """One ``features-gql serve`` on a fixed port, started and stopped at will."""

    def __init__(self, port: int, args: list[str], log: Path) -> None:
        self.port = port
        self.args = args
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def start(self) -> Process:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "--port", str(self.port), *self.args],
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise AssertionError("did not start within 30 s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(30)

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url,
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def has(self, id_: str, feature: str) -> Any:
        return self.gql(HAS, {"id": id_, "f": feature})

    def write(self, op: str, id_: str, feature: str) -> Any:
        return self.gql(WRITE % f"{op}Feature", {"id": id_, "f": feature})

    def defined_flags(self) -> list[str]:
        """The flags an OFREP bulk evaluation lists for a resource that has none."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/ofrep/v1/evaluate/flags",
            data=json.dumps({"context": {"targetingKey": "x", "resourceType": "t"}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return [flag["key"] for flag in json.loads(response.read())["flags"]]

    def ready(self) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def make(port: int, args: list[str], log: Path) -> Process:
        process = Process(port, args, log)
        started.append(process)
        return process

    yield make
    for process in started:
        if process.process is not None and process.process.poll() is None:
            process.process.kill()
            process.process.wait()


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def synced_to(edge: Process, revision: int) -> Callable[[], bool]:
    def check() -> bool:
        status = edge.gql("{ syncStatus { revision } }")["data"]["syncStatus"]
        return bool(status["revision"] == revision)

    return check


def edge_answers(edge: Process, truth: dict[tuple[str, str], bool]) -> tuple[int, int]:
    """Ask the edge every key of ``truth``: (answered correctly, asked)."""
    correct = 0
    for (id_, feature), expected in truth.items():
        answer = edge.has(id_, feature)
        if answer.get("data", {}).get("hasFeature") is expected and "errors" not in answer:
            correct += 1
    return correct, len(truth)


@pytest.mark.slow
def test_outage_kill_9_restart_during_outage_and_catch_up(
    processes: Callable[..., Process], tmp_path: Path
) -> None:
    primary = processes(free_port(), ["--store", f"sqlite://{tmp_path / 'primary.db'}"],
                        tmp_path / "primary.log").start()  # fmt: skip
    truth: dict[tuple[str, str], bool] = {}
    for i in range(40):
        feature = ("speedups", "beta")[i % 2]
        primary.write("add", f"p{i}", feature)
        truth[(f"p{i}", feature)] = True
        truth[(f"p{i}", "absent")] = False
    for i in range(0, 40, 4):
        primary.write("remove", f"p{i}", "speedups")
        truth[(f"p{i}", "speedups")] = False
    revision = primary.gql("{ revision }")["data"]["revision"]
    edge_args = ["--store", f"sqlite://{tmp_path / 'edge.db'}", "--upstream", primary.url]
    edge = processes(free_port(), edge_args, tmp_path / "edge.log").start()
    wait_for(synced_to(edge, revision), "the edge's first sync")

    primary.kill(signal.SIGKILL)
    correct, asked = 0, 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        right, total = edge_answers(edge, truth)
        correct, asked = correct + right, asked + total
    refused = edge.write("add", "p1", "new-flag")
    status, body = edge.ready()

    # The edge restarts during the outage, and answers from its persisted copy.
    edge.kill(signal.SIGTERM)
    edge.start()
    after_restart, asked_after = edge_answers(edge, truth)
    # Ready while it serves its copy (the first probe may be slow on a busy machine).
    wait_for(lambda: edge.ready()[0] == 200, f"the restarted edge to be ready: {edge.ready()}")
    status_after, body_after = edge.ready()
    print(
        f"\noutage: {correct}/{asked} reads answered correctly by the edge while the primary "
        f"was down; after restarting the edge: {after_restart}/{asked_after}"
    )
    assert asked > 0
    assert correct == asked
    assert after_restart == asked_after
    assert refused["data"] == {"addFeature": None}
    assert refused["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert status == 200
    assert body["upstream"]["connected"] is False
    assert status_after == 200, body_after
    assert body_after["upstream"]["revision"] == revision
    assert edge.gql("{ syncStatus { connected revision } }")["data"]["syncStatus"] == {
        "connected": False,
        "revision": revision,
    }

    # The primary comes back on the same file: the edge catches up with no action.
    primary.start()
    primary.write("add", "after", "outage")
    wait_for(lambda: edge.has("after", "outage")["data"]["hasFeature"] is True, "catching up")
    assert edge.write("add", "p1", "new-flag")["data"]["addFeature"]["changed"] is True
    assert primary.has("p1", "new-flag")["data"]["hasFeature"] is True


@pytest.mark.slow
def test_primary_restored_from_an_older_backup(
    processes: Callable[..., Process], tmp_path: Path
) -> None:
    db = tmp_path / "primary.db"
    primary = processes(free_port(), ["--store", f"sqlite://{db}"], tmp_path / "p.log").start()
    define = "mutation ($n: String!) { defineFeature(input: {name: $n}) { __typename } }"
    for i in range(10):
        primary.write("add", f"kept{i}", "speedups")
    primary.gql(define, {"n": "kept-definition"})
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db) as source, sqlite3.connect(backup) as target:
        source.backup(target)
    for i in range(5):
        primary.write("add", f"lost{i}", "speedups")
    primary.write("remove", "kept0", "speedups")
    primary.gql(define, {"n": "lost-definition"})
    edge_db = tmp_path / "edge.db"
    edge_args = ["--store", f"sqlite://{edge_db}", "--upstream", primary.url]
    edge = processes(free_port(), edge_args, tmp_path / "edge.log").start()
    wait_for(synced_to(edge, 18), "the edge's first sync")
    assert edge.has("lost0", "speedups")["data"]["hasFeature"] is True
    assert edge.defined_flags() == ["kept-definition", "lost-definition"]

    def restore() -> None:
        primary.kill(signal.SIGKILL)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        with sqlite3.connect(backup) as source, sqlite3.connect(db) as target:
            source.backup(target)
        primary.start()

    # 1. Restored to revision 10 while the edge runs: the upstream is behind the copy.
    restore()
    wait_for(synced_to(edge, 11), "the edge resyncing to the restored primary")
    assert edge.has("lost0", "speedups")["data"]["hasFeature"] is False
    assert edge.has("kept0", "speedups")["data"]["hasFeature"] is True
    # The catalog is the restored primary's too: the lost definition is gone.
    assert edge.defined_flags() == ["kept-definition"]
    primary.write("add", "new", "speedups")
    wait_for(synced_to(edge, 12), "following the restored primary")

    # 2. Restored again while the edge is down, and written past the copy's revision: the
    # revisions alone would look continuous; the change at the copy's revision differs.
    edge.kill(signal.SIGKILL)
    restore()
    for i in range(3):
        primary.write("add", f"other{i}", "beta")
    edge.start()
    wait_for(synced_to(edge, 14), "the edge resyncing to the other history")
    truth = {(f"kept{i}", "speedups"): True for i in range(10)}
    truth |= {(f"other{i}", "beta"): True for i in range(3)}
    truth |= {(f"lost{i}", "speedups"): False for i in range(5)} | {("new", "speedups"): False}
    correct, asked = edge_answers(edge, truth)
    print(f"\ndata loss: the edge converged to the restored primary: {correct}/{asked} keys")
    assert correct == asked
    assert os.path.exists(f"{edge_db}.upstream.json")
