"""Checkouts side by side: `python -m benchmarks.compare CHECKOUT [CHECKOUT ...]`.

A before/after table from one run. Starts the raw aiohttp handler and, for each checkout
(a directory holding a `features_gql` package: a `git worktree`, say), `features-gql
serve --store memory` and nothing else, all pinned to one core with the load on the
other. `hasFeature` is driven in alternating turns (so drift in the machine's load falls
on every server alike), then 1,000-item `checks` and `checkMatrix` requests take turns
request by request. Prints a Markdown table, every figure with its ratio to the baseline
measured in the same run.

Each checkout runs with its own `.venv/bin/python` when it has one (install it there with
`python -m venv .venv && .venv/bin/pip install -e .`), else with this interpreter, which
then imports that checkout's `features_gql` (it is the working directory) but this
environment's installed plugins: fine for checkouts whose plugins have not changed.

    git worktree add ../before <commit> && (cd ../before && python3 -m venv .venv \\
        && .venv/bin/pip install -q -e .)
    .venv/bin/python -m benchmarks.compare ../before .
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from benchmarks.run import (
    ADD_QUERY,
    CHECKS_QUERY,
    HAS_QUERY,
    MATRIX_QUERY,
    PIPELINE,
    body,
    check_items,
    features_gql,
    free_port,
    in_turns,
    latency_in_turns,
    load_cpus,
    pinned,
    post,
    python_load,
    raw_server,
    running,
    server_cpus,
    wrk_load,
)


def label(checkout: Path) -> str:
    """The checkout's commit (short hash, `+` when it has changes), else its name."""
    try:
        commit = _git(checkout, "rev-parse", "--short", "HEAD")
        dirty = _git(checkout, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return checkout.name
    return f"{commit}+" if dirty else commit


def _git(checkout: Path, *args: str) -> str:
    command = ["git", "-C", str(checkout), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def serve_command(checkout: Path, port: int) -> list[str]:
    """The checkout's service, run from the checkout (so that its package is imported)."""
    own = checkout / ".venv" / "bin" / "python"
    python = str(own) if own.exists() else sys.executable
    return features_gql(port, python=python)


def compare(args: argparse.Namespace) -> str:
    checkouts = [Path(c).resolve() for c in args.checkouts]
    for checkout in checkouts:
        if not (checkout / "features_gql").is_dir():
            raise SystemExit(f"{checkout} holds no features_gql package")
    load = python_load if args.python_load or not shutil.which("wrk") else wrk_load
    server, rest = server_cpus(1), load_cpus(1)
    raw_port = free_port()
    ports = [free_port() for _ in checkouts]
    has = body(HAS_QUERY, {"r": PIPELINE, "f": "speedups"})
    size = 1000 if not args.quick else 50
    checks = body(CHECKS_QUERY, {"items": check_items(size)})
    ids = [f"p{i}" for i in range(size)]
    matrix = body(MATRIX_QUERY, {"type": "pipeline", "ids": ids, "features": ["speedups"]})
    with ExitStack() as stack:
        stack.enter_context(running(pinned(raw_server(raw_port), server), raw_port))
        urls = []
        for checkout, port in zip(checkouts, ports, strict=True):
            command = pinned(serve_command(checkout, port), server)
            stack.enter_context(running(command, port, cwd=checkout))
            url = f"http://127.0.0.1:{port}/graphql"
            post(url, {"query": ADD_QUERY, "variables": {"r": PIPELINE, "f": "speedups"}})
            urls.append(url)
        targets = [(f"http://127.0.0.1:{raw_port}/check", [has])] + [(u, [has]) for u in urls]
        rates = in_turns(
            load, targets, args.duration * args.turns, args.connections, rest, turns=args.turns
        )
        latencies = latency_in_turns(
            [(f"http://127.0.0.1:{raw_port}/checks", checks)]
            + [(u, checks) for u in urls]
            + [(u, matrix) for u in urls],
            args.repeat,
        )
    raw_rate = rates[0][0]
    raw_ms = latencies[0][0]
    n = len(checkouts)
    names = [label(c) for c in checkouts]
    lines = [
        f"| row | {' | '.join(names)} |",
        f"| --- |{' --- |' * n}",
        f"| `hasFeature` req/s, ratio to the raw handler ({raw_rate:,.0f} req/s) | "
        + " | ".join(f"{rate:,.0f}, {rate / raw_rate:.2f}x" for rate, _, _ in rates[1:])
        + " |",
        f"| `checks`, {size:,} items, p50, ratio to the raw JSON handler ({raw_ms:.3f} ms) | "
        + " | ".join(f"{p50:.3f} ms, {p50 / raw_ms:.2f}x" for p50, _ in latencies[1 : 1 + n])
        + " |",
        f"| `checkMatrix`, {size:,} ids, p50, same baseline | "
        + " | ".join(f"{p50:.3f} ms, {p50 / raw_ms:.2f}x" for p50, _ in latencies[1 + n :])
        + " |",
    ]
    generator = "wrk" if load is wrk_load else "python"
    return (
        f"load generator: {generator}; {args.turns} turns of {args.duration:g} s, "
        f"{args.connections} connections; p50 of {args.repeat} big requests each\n\n"
        + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("checkouts", nargs="+", metavar="CHECKOUT", help="directories to run")
    parser.add_argument("--turns", type=int, default=6, help="alternating turns per server (6)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per turn (10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--repeat", type=int, default=100, help="big requests per server (100)")
    parser.add_argument("--python-load", action="store_true", help="no wrk: the Python load")
    parser.add_argument("--quick", action="store_true", help="tiny runs: does it work?")
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.duration, args.repeat = 1, 0.3, 3
    print(compare(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
