"""The features-gql command, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "features_gql.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=env or clean_env()
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def post(port: int, query: str, variables: dict[str, Any] | None = None) -> Any:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Serving:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.stdout.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        self.process.kill()
        raise AssertionError("server did not start within 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.process.send_signal(sig)
        output, _ = self.process.communicate(timeout=30)
        return output


@pytest.fixture
def serving() -> Iterator[Any]:
    started: list[Serving] = []

    def start(*args: str, env: dict[str, str]) -> Serving:
        server = Serving(list(args), env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


ADD = """mutation ($f: String!) { addFeature(resource: {type: "pipeline", id: "db8e9a0d"},
  feature: $f) { ... on FeatureChange { changed revision } } }"""
FEATURES = '{ resource(type: "pipeline", id: "db8e9a0d") { features } }'


def test_default_sqlite_store_keeps_acknowledged_writes_across_kill_9(
    serving: Any, tmp_path: Path
) -> None:
    env = clean_env(XDG_DATA_HOME=str(tmp_path / "data"))
    first = serving(env=env)
    acknowledged = []
    for i in range(20):
        result = post(first.port, ADD, {"f": f"flag-{i:02}"})
        assert result["data"]["addFeature"] == {"changed": True, "revision": i + 1}
        acknowledged.append(f"flag-{i:02}")
    first.stop(signal.SIGKILL)
    assert (tmp_path / "data" / "features-gql" / "features.db").exists()

    second = serving(env=env)
    assert post(second.port, FEATURES)["data"]["resource"]["features"] == acknowledged
    assert post(second.port, "{ revision }")["data"]["revision"] == 20
    result = post(second.port, ADD, {"f": "after-restart"})
    assert result["data"]["addFeature"] == {"changed": True, "revision": 21}
    output = second.stop()
    assert "Traceback" not in output


def test_serve_logs_json_lines_with_request_ids(serving: Any) -> None:
    server = serving("--store", "memory", "--log-format", "json", env=clean_env())
    post(server.port, ADD, {"f": "speedups"})
    output = server.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    operations = [line for line in lines if line.get("message") == "store operation"]
    assert operations, output
    add = next(line for line in operations if line["op"] == "add")
    assert add["store"] == "memory"
    assert add["resource"] == "pipeline/db8e9a0d"
    assert add["feature"] == "speedups"
    assert add["outcome"] == "ok"
    assert len(add["request_id"]) == 20  # a per-process prefix and a counter
    assert add["duration_ms"] >= 0


def test_environment_selects_the_store(serving: Any, tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    server = serving(env=clean_env(FEATURES_GQL_STORE=f"sqlite://{db}"))
    post(server.port, ADD, {"f": "speedups"})
    server.stop()
    assert db.exists()


def test_plugins_lists_bundled_plugins_from_entry_points() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    for name in ("memory", "sqlite", "loguru"):
        assert f"\n{name}  (features-gql " in "\n" + result.stdout
    assert "store:   sqlite [sqlite://]" in result.stdout
    assert "logger:  loguru" in result.stdout
    assert "features_gql_register_stores" in result.stdout


LOCAL_PLUGIN = """
from features_gql import hookimpl
from features_gql_plugins.memory_store import MemoryStore


class EchoStore(MemoryStore):
    name = "echo"


@hookimpl
def features_gql_register_stores(registry):
    registry.add("echo", lambda options, builder: EchoStore(), description="local test store")
"""


def test_plugins_dir_adds_local_plugins(serving: Any, tmp_path: Path) -> None:
    (tmp_path / "echo_plugin.py").write_text(LOCAL_PLUGIN)
    result = run_cli("plugins", "--plugins-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "echo_plugin.py  (local)" in result.stdout
    assert "store:   echo - local test store" in result.stdout
    server = serving("--plugins-dir", str(tmp_path), "--store", "echo", env=clean_env())
    assert post(server.port, ADD, {"f": "x"})["data"]["addFeature"]["changed"] is True


def test_misspelt_hook_fails_at_start_up_with_the_hook_names(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text(
        "from features_gql import hookimpl\n\n"
        "@hookimpl\ndef features_gql_register_store(registry):\n    pass\n"
    )
    result = run_cli("plugins", "--plugins-dir", str(tmp_path))
    assert result.returncode == 2
    assert "features_gql_register_store" in result.stderr
    assert "features_gql_register_stores" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "nosuch"], "unknown store plugin 'nosuch'; available: "),
        (["--store", "redis://x"], "no store plugin handles URLs like redis://"),
        (["--log-format", "xml"], "invalid choice"),
        (["--plugins-dir", "/does/not/exist"], "does not exist"),
        (["--port", "70000"], "port must be between 0 and 65535"),
    ],
)
def test_bad_configuration_fails_fast_with_a_clear_message(args: list[str], message: str) -> None:
    result = run_cli("serve", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_store_option_in_toml_is_named(tmp_path: Path) -> None:
    config = tmp_path / "features.toml"
    config.write_text('[store]\nplugin = "sqlite"\npath = "x.db"\nsyncronous = "full"\n')
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert "unknown option(s) 'syncronous' for store 'sqlite'" in result.stderr
    assert "synchronous" in result.stderr


def test_export_schema_matches_the_committed_schema(tmp_path: Path) -> None:
    result = run_cli("export-schema")
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "schema.graphql").read_text()
    assert result.stdout == committed, (
        "schema.graphql is stale: run `features-gql export-schema -o schema.graphql`"
    )
    out = tmp_path / "schema.graphql"
    assert run_cli("export-schema", "--output", str(out)).returncode == 0
    assert out.read_text() == committed


def test_workers_share_one_port_and_stop_together(serving: Any, tmp_path: Path) -> None:
    server = serving("--workers", "2", "--store", f"sqlite://{tmp_path}/w.db", env=clean_env())
    children_file = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    deadline = time.monotonic() + 10
    while len(children_file.read_text().split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = [int(pid) for pid in children_file.read_text().split()]
    assert len(children) == 2
    for i in range(20):
        assert post(server.port, ADD, {"f": f"w{i:02}"})["data"]["addFeature"]["changed"]
    features = post(server.port, FEATURES)["data"]["resource"]["features"]
    assert features == [f"w{i:02}" for i in range(20)]
    output = server.stop()
    assert server.process.returncode == 0, output
    assert "2 workers" in output
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_workers_refuse_a_store_that_lives_in_one_process() -> None:
    result = run_cli("serve", "--workers", "2", "--store", "memory", "--port", "18080")
    assert result.returncode == 2
    assert "keeps its data inside one process" in result.stderr


def test_a_taken_port_is_a_clear_error_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--store", "memory", "--port", str(port))
    assert result.returncode == 2
    assert "cannot serve" in result.stderr
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
