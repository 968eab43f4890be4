"""The benchmark harness runs end to end (tiny loads; it measures nothing here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_harness_runs_and_writes_ratios(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--duration", "0.2", "--connections", "4",
         "--python-load", "--skip-workers", "--skip-mongodb", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "load generator: python" in result.stdout
    report = json.loads(output.read_text())
    rows = {row["scenario"]: row for row in report["rows"]}
    assert rows["HTTP: hasFeature"]["baseline"] == "raw handler"
    assert rows["HTTP: hasFeature"]["ratio"] > 0
    assert rows["HTTP: checks, 1000 items"]["ratio"] > 0
    assert rows["in-process: LocalReplica.has, memory"]["ratio"] > 0
    assert rows["HTTP: OFREP single evaluation"]["baseline"] == "raw handler"
    assert rows["HTTP: OFREP single evaluation"]["note"].endswith("x hasFeature")
    openfeature = rows["in-process: OpenFeature SDK, FeaturesProvider (LocalReplica)"]
    assert openfeature["baseline"] == "InMemoryProvider"
    assert openfeature["ratio"] > 0


def test_catalog_benchmark_runs_and_writes_ratios(tmp_path: Path) -> None:
    output = tmp_path / "catalog.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.catalog", "--assignments", "2000", "--small", "400",
         "--repeat", "3", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["scenario"]: row for row in json.loads(output.read_text())}
    imports = [r for name, r in rows.items() if name.startswith("features-gql import, 2,000")]
    assert imports[0]["ratio"] > 0
    assert imports[0]["baseline"] == "one at a time"
    assert rows["history of a resource at 2,000"]["baseline"] == "at 400"
    assert rows["history of a resource at 2,000"]["ratio"] > 0


def test_hybrid_harness_runs(tmp_path: Path) -> None:
    output = tmp_path / "hybrid.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.hybrid", "--quick", "--python-load",
         "--skip", "throughput", "--writes", "10", "--assignments", "2000",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["scenario"]: row for row in json.loads(output.read_text())["rows"]}
    edge = rows["propagation: write at the primary -> in the edge's copy"]
    assert edge["baseline"] == "1 s polling"
    assert edge["p99_ms"] > 0
    assert rows["LocalReplica memory at 2,000: fingerprints"]["value"] > 0
    assert rows["in-process: LocalReplica.has at 2,000"]["ratio"] > 0


def test_compare_runs_checkouts_side_by_side() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--python-load", str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 5  # the header and its rule, then one row per measure
    for row in table[2:]:
        assert row.startswith(("| `hasFeature`", "| `checks`", "| `checkMatrix`"))
        assert row.rstrip(" |").endswith("x"), row


def test_compare_refuses_a_directory_without_the_package(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "holds no features_gql package" in result.stderr


def test_feed_fanout_runs(tmp_path: Path) -> None:
    output = tmp_path / "fanout.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.feed_fanout", "--subscribers", "3", "--writes", "300",
         "--writers", "2", "--skip-stalled", "--json", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fan_out, one_to_many = json.loads(output.read_text())
    assert fan_out["figures"]["subscribers_with_every_change"] == "3/3"
    assert fan_out["figures"]["tracebacks_logged"] == 0
    assert one_to_many["figures"]["worst_ms"] > 0


def test_connection_budgets_benchmark_runs(tmp_path: Path) -> None:
    output = tmp_path / "budgets.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.connection_budgets", "--duration", "1", "--ramp",
         "0.5", "--websockets", "20", "--bodies", "20", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["scenario"]: row for row in json.loads(output.read_text())}
    assert set(rows) == {"quiet", "websockets", "bodies"}
    assert rows["websockets"]["misbehaving client"]["upgraded"] > 0
    assert rows["bodies"]["misbehaving client"]["sent"] > 0
    assert all(row["normal requests"] > 0 for row in rows.values())
