"""The PostgreSQL benchmarks run end to end (tiny loads; they measure nothing here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(module: str, postgres_url: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "POSTGRES_URL": postgres_url},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_driver_comparison_measures_every_operation_on_both_drivers(postgres_url: str) -> None:
    output = run_benchmark("benchmarks.postgres_drivers", postgres_url)
    assert "server  POSTGRES_URL" in output
    rows = [line.split() for line in output.splitlines() if line.startswith(("asyncpg", "psycopg"))]
    measured = {(row[0], row[1]) for row in rows}
    for driver in ("psycopg", "asyncpg", "asyncpg/nr"):
        for op in ("has", "add", "check_many(1000)"):
            assert (driver, op) in measured
    assert all(row[-1].endswith("x") for row in rows)


@pytest.mark.slow
def test_store_comparison_measures_postgres_beside_sqlite(postgres_url: str) -> None:
    output = run_benchmark("benchmarks.stores", postgres_url, "--skip-mongodb")
    assert "postgres  POSTGRES_URL" in output
    stores = {line.split()[0] for line in output.splitlines() if "check_many(1000)" in line}
    assert {"memory", "sqlite", "postgres"} <= stores
