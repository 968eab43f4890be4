"""The features-gql command, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

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
    """``features-gql serve`` as a process; ready once it announces that it is serving."""

    def __init__(self, args: list[str], env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        announced = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(announced,), daemon=True)
        self._reader.start()
        if not announced.wait(30):
            self.process.kill()
            self._reader.join(10)
            raise AssertionError(f"server did not announce itself: {self.output}")
        if self.process.poll() is not None:
            self._reader.join(10)
            raise AssertionError(f"server exited: {self.output}")

    def _read(self, announced: threading.Event) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "serving GraphQL" in line:
                announced.set()
        announced.set()  # the process ended

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.process.send_signal(sig)
        self.process.wait(timeout=30)
        self._reader.join(10)
        return self.output


@pytest.fixture
def serving() -> Iterator[Any]:
    started: list[Serving] = []

    def start(*args: str, env: dict[str, str], port: int | None = None) -> Serving:
        server = Serving(list(args), env, port)
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
    assert len(add["request_id"]) == 20  # the process's 12-digit prefix, then a counter
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
        (["--upstream", "central:8080"], "the upstream must be an http(s) URL"),
        (["--upstream", "http://u:p@central/graphql"], "give the upstream's token with"),
        (
            ["--upstream", "http://central/graphql", "--workers", "2"],
            "an edge (--upstream) runs one",
        ),
        (["--max-staleness", "0"], "max_staleness must be positive"),
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
    assert "serving GraphQL" in output
    assert "workers=2" in output
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_workers_serve_one_metrics_view_whichever_answers_the_scrape(
    serving: Any, tmp_path: Path
) -> None:
    server = serving("--workers", "2", "--store", f"sqlite://{tmp_path}/m.db", env=clean_env())
    for i in range(30):
        post(server.port, ADD, {"f": f"m{i:02}"})

    def counted() -> tuple[float, set[str]]:
        # A new connection each time, so the kernel may hand it to either worker.
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "features_gql_store_operation_seconds_count"
                    and sample.labels.get("operation") == "add"
                ):
                    total += sample.value
        return total, {line.split()[0] for line in text.splitlines() if "in_flight" in line}

    scrapes = [counted() for _ in range(8)]
    assert {total for total, _ in scrapes} == {30.0}, scrapes
    server.stop()


def test_workers_refuse_a_store_that_lives_in_one_process() -> None:
    result = run_cli("serve", "--workers", "2", "--store", "memory", "--port", "18080")
    assert result.returncode == 2
    assert "keeps its data inside one process" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_one_clear_line_before_any_announcement(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--store", "sqlite:///dev/null/x", "--port", str(port), "--workers", workers
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"features-gql: error: cannot serve on 127.0.0.1:{port}: address already in use"
    ]


def test_a_second_server_on_the_same_port_fails_like_any_taken_port(
    serving: Any, tmp_path: Path
) -> None:
    first = serving("--workers", "2", "--store", f"sqlite://{tmp_path}/a.db", env=clean_env())
    second = run_cli(
        "serve", "--workers", "2", "--store", f"sqlite://{tmp_path}/b.db", "--port", str(first.port)
    )
    assert second.returncode == 2
    assert "address already in use" in second.stderr
    # Every request reaches the one data set: the same change takes effect once.
    answers = [post(first.port, ADD, {"f": "speedups"})["data"]["addFeature"] for _ in range(6)]
    assert [answer["changed"] for answer in answers] == [True] + [False] * 5
    first.stop()
    assert first.process.returncode == 0


def test_workers_share_connections_that_arrive_together(serving: Any, tmp_path: Path) -> None:
    """A burst of new connections (a load test, a client's pool) is not all taken by the
    worker that happens to wake first."""
    server = serving("--workers", "2", "--store", f"sqlite://{tmp_path}/w.db", env=clean_env())
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    workers = [int(pid) for pid in children.read_text().split()]
    assert len(workers) == 2
    burst = [socket.socket() for _ in range(32)]
    try:
        for sock in burst:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server.port))
        for sock in burst:
            sock.setblocking(True)
            sock.settimeout(10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in burst:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        accepted = _established(server.port)
        held = {
            pid: sum(os.readlink(fd) in accepted for fd in Path(f"/proc/{pid}/fd").iterdir())
            for pid in workers
        }
        assert sum(held.values()) == 32
        assert all(held.values()), held
    finally:
        for sock in burst:
            sock.close()


def _established(port: int) -> set[str]:
    """``socket:[inode]`` of every accepted connection to ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
        if local_port == port and state == "01":
            found.add(f"socket:[{inode}]")
    return found


def _unopenable(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A path that cannot be a SQLite database, and the reason the error must give."""
    if kind == "directory":
        return tmp_path, "it is a directory"
    if kind == "not a database":
        path = tmp_path / "notes.txt"
        path.write_text("not a database, but long enough to have a header\n" * 4)
        return path, "the file exists but is not a SQLite database"
    if kind == "under a file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "f.db", f"{tmp_path / 'file'} is not a directory"
    return Path("/proc/features-gql.db"), "unable to open database file"


@pytest.mark.parametrize("kind", ["directory", "not a database", "under a file", "in /proc"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sqlite_file_that_cannot_be_opened_is_one_line_naming_the_path(
    tmp_path: Path, kind: str, workers: str
) -> None:
    path, reason = _unopenable(tmp_path, kind)
    result = run_cli("serve", "--store", f"sqlite://{path}", "--port", "0", "--workers", workers)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"features-gql: error: cannot open sqlite file {str(path)!r}: {reason}"
    ]


def test_a_store_that_does_not_answer_at_start_up_is_not_announced_as_ready(
    serving: Any,
) -> None:
    server = serving(
        "--store", "memory", "--latency", "stall=true", "--log-format", "json", env=clean_env()
    )
    lines = [json.loads(line) for line in server.stop().splitlines()]  # every line is JSON
    messages = [line["message"] for line in lines]
    assert "store ready" not in messages
    warning = next(line for line in lines if line["message"].startswith("store not ready"))
    assert (warning["level"], warning["reason"]) == ("WARNING", "store timeout")
    serving_line = next(line for line in lines if line["message"].endswith("serving GraphQL"))
    assert serving_line["url"] == f"http://127.0.0.1:{server.port}/graphql"
    assert messages.index(warning["message"]) < messages.index(serving_line["message"])


def test_workers_stop_when_their_supervisor_is_killed(serving: Any, tmp_path: Path) -> None:
    server = serving("--workers", "2", "--store", f"sqlite://{tmp_path}/w.db", env=clean_env())
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    workers = [int(pid) for pid in children.read_text().split()]
    assert len(workers) == 2
    server.stop(signal.SIGKILL)  # no chance to stop them itself
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in workers), "orphaned workers kept running"
    # ... and the port is free again.
    again = serving("--store", "memory", env=clean_env(), port=server.port)
    assert post(again.port, "{ revision }")["data"]["revision"] == 0


def _running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except FileNotFoundError:
        return False
