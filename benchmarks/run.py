"""The benchmark harness: `python -m benchmarks` (see --help).

Starts what it needs on 127.0.0.1 (a raw aiohttp baseline server, features-gql on the
memory store, with 1 and 2 workers), drives bounded loads with wrk when it is installed
(else a Python load generator: the table says which), measures the in-process path
against a dict lookup, and prints a table in which every row has the ratio to its
baseline measured in the same run. Results are also written as JSON.

Servers are pinned to CPU 0 and the load generator to CPU 1 when the machine has two
cores, so the two do not fight for one core.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

HERE = Path(__file__).resolve().parent
PIPELINE = {"type": "pipeline", "id": "db8e9a0d"}
HAS_QUERY = "query Has($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"
CHECKS_QUERY = "query Checks($items: [CheckInput!]!) { checks(items: $items) { enabled } }"
MATRIX_QUERY = (
    "query Matrix($type: String!, $ids: [String!]!, $features: [String!]!) "
    "{ checkMatrix(type: $type, ids: $ids, features: $features) }"
)
FEATURES_QUERY = (
    "query Features($t: String!, $i: String!) { resource(type: $t, id: $i) { features } }"
)
ADD_QUERY = (
    "mutation Add($r: ResourceInput!, $f: String!) { addFeature(resource: $r, feature: $f) "
    "{ __typename } }"
)
REMOVE_QUERY = ADD_QUERY.replace("Add(", "Remove(").replace("addFeature", "removeFeature")
OFREP_BODY = json.dumps(
    {"context": {"targetingKey": PIPELINE["id"], "resourceType": PIPELINE["type"]}},
    separators=(",", ":"),
).encode()


@dataclass
class Row:
    scenario: str
    unit: str  # "req/s" for throughput rows, "µs" or "ms" for latency rows
    value: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    note: str = ""


@dataclass
class Report:
    machine: dict[str, Any]
    load_generator: str
    duration_s: float
    connections: int
    rows: list[Row] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


def server_cpus(n: int = 1) -> list[int] | None:
    available = cpus()
    return available[:n] if len(available) > n else None


def load_cpus(server_count: int = 1) -> list[int] | None:
    available = cpus()
    return available[server_count:] or None if len(available) > server_count else None


def pinned(command: list[str], cores: list[int] | None) -> list[str]:
    if cores and shutil.which("taskset"):
        return ["taskset", "-c", ",".join(map(str, cores)), *command]
    return command


@contextmanager
def running(
    command: list[str],
    port: int,
    health: str = "/healthz",
    announced: str | None = None,
    cwd: Path | None = None,
    log_to: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Run ``command`` (in ``cwd``) until the block ends, once ``health`` answers on
    ``port`` (and, with ``announced``, once that text is in its log: with workers, the
    first to serve answers ``health`` while the others may still be starting, and a load
    begun then would open every connection to the first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")}
    # The service logs (writes at INFO) to a file, as it would to a journal: a pipe that
    # nobody reads would fill up and stall it.
    # (``log_to``: a file the caller reads afterwards.) Closed in the finally below.
    log = (
        tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        if log_to is None
        else log_to.open("w+")
    )
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env, cwd=cwd
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command} exited: {log.read()}")
            if _answers(f"http://127.0.0.1:{port}{health}") and _said(log, announced):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not start")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except Exception:
        return False


def _said(log: IO[str], text: str | None) -> bool:
    """Whether the log holds ``text`` (None: nothing to wait for)."""
    if text is None:
        return True
    log.seek(0)
    found = text in log.read()
    log.seek(0, os.SEEK_END)  # the process goes on appending
    return found


def features_gql(
    port: int, workers: int = 1, store: str = "memory", python: str = sys.executable
) -> list[str]:
    command = [
        python,
        "-m",
        "features_gql.cli",
        "serve",
        "--port",
        str(port),
        "--store",
        store,
    ]
    if workers != 1:
        command += ["--workers", str(workers)]
    return command


def raw_server(port: int) -> list[str]:
    return [sys.executable, str(HERE / "raw_server.py"), str(port)]


def post(url: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# -- load generators ---------------------------------------------------------------------

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n %% #bodies) + 1])
end
"""


def _wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_load(
    url: str, bodies: list[bytes], duration: float, connections: int, cores: list[int] | None
) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp, "bodies.txt")
        lines.write_bytes(b"\n".join(bodies) + b"\n")
        script = Path(tmp, "post.lua")
        script.write_text(_WRK_SCRIPT % lines)
        command = pinned(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            cores,
        )
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    return rate, p50, p99


async def _python_load(
    url: str, bodies: list[bytes], duration: float, connections: int
) -> tuple[float, float, float]:
    latencies: list[float] = []
    stop = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            n = offset
            while time.perf_counter() < stop:
                started = time.perf_counter()
                async with session.post(url, data=bodies[n % len(bodies)], headers=headers) as r:
                    await r.read()
                latencies.append(time.perf_counter() - started)
                n += connections

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return (
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


def python_load(
    url: str, bodies: list[bytes], duration: float, connections: int, cores: list[int] | None
) -> tuple[float, float, float]:
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        return asyncio.run(_python_load(url, bodies, duration, connections))
    finally:
        if cores:
            os.sched_setaffinity(0, cpus_all)


cpus_all = cpus()

Load = Callable[[str, list[bytes], float, int, list[int] | None], tuple[float, float, float]]


def in_turns(
    load: Load,
    targets: list[tuple[str, list[bytes]]],
    duration: float,
    connections: int,
    cores: list[int] | None,
    turns: int = 3,
) -> list[tuple[float, float, float]]:
    """Each target loaded for ``duration`` in all, in ``turns`` alternating slices: the
    mean rate and the median p50 and p99 of each."""
    samples: list[list[tuple[float, float, float]]] = [[] for _ in targets]
    for _ in range(turns):
        for (url, bodies), taken in zip(targets, samples, strict=True):
            taken.append(load(url, bodies, duration / turns, connections, cores))
    return [
        (
            statistics.fmean(rate for rate, _, _ in taken),
            statistics.median(p50 for _, p50, _ in taken),
            statistics.median(p99 for _, _, p99 in taken),
        )
        for taken in samples
    ]


def latency_in_turns(targets: list[tuple[str, bytes]], repeat: int) -> list[tuple[float, float]]:
    """Sequential requests, one kept-alive connection per target, the targets taking turns
    request by request (so that whatever else the machine does falls on all of them
    alike): the p50 and p99 in ms of each, for big single requests."""
    connections = []
    for url, _ in targets:
        parts = urllib.parse.urlsplit(url)
        connections.append(
            (http.client.HTTPConnection(parts.hostname, parts.port, timeout=60), parts.path)
        )
    samples: list[list[float]] = [[] for _ in targets]
    try:
        for _ in range(repeat):
            for (connection, path), (_, payload), taken in zip(
                connections, targets, samples, strict=True
            ):
                started = time.perf_counter()
                connection.request(
                    "POST", path, body=payload, headers={"Content-Type": "application/json"}
                )
                with connection.getresponse() as response:
                    response.read()
                taken.append((time.perf_counter() - started) * 1000)
    finally:
        for connection, _ in connections:
            connection.close()
    results = []
    for taken in samples:
        taken.sort()
        results.append((taken[len(taken) // 2], taken[min(len(taken) - 1, int(len(taken) * 0.99))]))
    return results


def body(query: str, variables: dict[str, Any]) -> bytes:
    return json.dumps({"query": query, "variables": variables}, separators=(",", ":")).encode()


def check_items(n: int) -> list[dict[str, Any]]:
    return [
        {"resource": {"type": "pipeline", "id": f"p{i}"}, "feature": "speedups"} for i in range(n)
    ]


# -- in-process ------------------------------------------------------------------------


def per_call_ns(fn: Callable[[], Any], number: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / number)
    return best


async def per_await_ns(fn: Callable[[], Awaitable[Any]], number: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(number):
            await fn()
        best = min(best, (time.perf_counter_ns() - started) / number)
    return best


async def in_process_rows(
    quick: bool, mongodb_url: str | None, mongodb_label: str = "mongodb"
) -> list[Row]:
    from features_gql import FeaturesAPI
    from features_gql.domain import Resource
    from features_gql.replica import LocalReplica
    from features_gql_plugins.memory_store import MemoryStore
    from features_gql_plugins.sqlite_store import SQLiteStore

    number = 2_000 if quick else 50_000
    flags = {("pipeline", "db8e9a0d", "speedups")}
    key = ("pipeline", "db8e9a0d", "speedups")
    dict_ns = per_call_ns(lambda: key in flags, number * 10)
    rows = [Row("in-process: dict lookup (baseline)", "µs", dict_ns / 1000, baseline="itself")]
    resource = Resource("pipeline", "db8e9a0d")

    async def measure(name: str, store: Any, count: int) -> None:
        api = FeaturesAPI(store)
        await store.open()
        try:
            await api.add(resource, "speedups")
            ns = await per_await_ns(lambda: api.has(resource, "speedups"), count)
            rows.append(
                Row(
                    f"in-process: FeaturesAPI.has, {name}",
                    "µs",
                    ns / 1000,
                    baseline="dict lookup",
                    ratio=ns / dict_ns,
                )
            )
            replica = LocalReplica(api)
            await replica.start()
            try:
                ns = per_call_ns(
                    lambda: replica.has(("pipeline", "db8e9a0d"), "speedups"), count * 10
                )
            finally:
                await replica.stop()
            rows.append(
                Row(
                    f"in-process: LocalReplica.has, {name}",
                    "µs",
                    ns / 1000,
                    baseline="dict lookup",
                    ratio=ns / dict_ns,
                    target="≤ 3x",
                )
            )
        finally:
            await store.close()

    await measure("memory", MemoryStore(), number)
    if importlib.util.find_spec("openfeature") is not None:
        rows.extend(await openfeature_rows(number))
    with tempfile.TemporaryDirectory() as tmp:
        await measure("sqlite", SQLiteStore(str(Path(tmp, "bench.db"))), number // 10)
    if mongodb_url:
        from features_gql_plugins.mongodb_store import MongoDBStore

        await measure(
            mongodb_label,
            MongoDBStore(mongodb_url, database=f"bench_{os.getpid()}"),
            max(20, number // 50),
        )
    return rows


async def openfeature_rows(number: int) -> list[Row]:
    """One boolean evaluation through the OpenFeature SDK's client, with our provider
    over a LocalReplica against the same SDK with its InMemoryProvider doing the same
    work (a set lookup keyed by the context)."""
    from openfeature import api as openfeature_api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from features_gql import FeaturesAPI
    from features_gql.openfeature import FeaturesProvider
    from features_gql.replica import LocalReplica
    from features_gql_plugins.memory_store import MemoryStore

    flags = {("pipeline", "db8e9a0d", "speedups")}

    def by_context(
        flag: InMemoryFlag[bool], context: EvaluationContext
    ) -> FlagResolutionDetails[bool]:
        key = (context.attributes.get("resourceType"), context.targeting_key, "speedups")
        if key in flags:
            return FlagResolutionDetails(True, reason=Reason.TARGETING_MATCH, variant="on")
        return FlagResolutionDetails(False, reason=Reason.DEFAULT, variant="off")

    in_memory = InMemoryProvider(
        {"speedups": InMemoryFlag("off", {"on": True, "off": False}, context_evaluator=by_context)}
    )
    api = FeaturesAPI(MemoryStore())
    await api.add(("pipeline", "db8e9a0d"), "speedups")
    replica = LocalReplica(api)
    await replica.start()
    context = EvaluationContext("db8e9a0d", {"resourceType": "pipeline"})
    try:
        openfeature_api.set_provider_and_wait(in_memory, "bench-in-memory")
        openfeature_api.set_provider_and_wait(FeaturesProvider(replica), "bench-features-gql")
        baseline_client = openfeature_api.get_client("bench-in-memory")
        ours_client = openfeature_api.get_client("bench-features-gql")
        assert baseline_client.get_boolean_value("speedups", False, context) is True
        assert ours_client.get_boolean_value("speedups", False, context) is True
        count = max(200, number // 10)
        base_ns = per_call_ns(
            lambda: baseline_client.get_boolean_value("speedups", False, context), count
        )
        ours_ns = per_call_ns(
            lambda: ours_client.get_boolean_value("speedups", False, context), count
        )
    finally:
        openfeature_api.clear_providers()
        await replica.stop()
    return [
        Row(
            "in-process: OpenFeature SDK, InMemoryProvider (baseline)",
            "µs",
            base_ns / 1000,
            baseline="itself",
        ),
        Row(
            "in-process: OpenFeature SDK, FeaturesProvider (LocalReplica)",
            "µs",
            ours_ns / 1000,
            baseline="InMemoryProvider",
            ratio=ours_ns / base_ns,
            target="≤ 1.5x",
        ),
    ]


# -- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Report:
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    load = wrk_load if use_wrk else python_load
    report = Report(
        machine={
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": len(cpus()) or os.cpu_count(),
        },
        load_generator="wrk" if use_wrk else "python (aiohttp client)",
        duration_s=args.duration,
        connections=args.connections,
    )
    rows = report.rows
    raw_port, gql_port = free_port(), free_port()
    one, rest = server_cpus(1), load_cpus(1)
    has_body = body(HAS_QUERY, {"r": PIPELINE, "f": "speedups"})

    with (
        running(pinned(raw_server(raw_port), one), raw_port),
        running(pinned(features_gql(gql_port), one), gql_port),
    ):
        gql = f"http://127.0.0.1:{gql_port}/graphql"
        raw = f"http://127.0.0.1:{raw_port}"
        post(gql, {"query": ADD_QUERY, "variables": {"r": PIPELINE, "f": "speedups"}})

        # The baseline, hasFeature and OFREP's single evaluation are measured in alternating
        # turns, so drift in the machine's load (a shared host's, too) reaches all three
        # alike and the ratios between them hold.
        ofrep = f"http://127.0.0.1:{gql_port}/ofrep/v1/evaluate/flags"
        (baseline, has, single) = in_turns(
            load,
            [(f"{raw}/check", [has_body]), (gql, [has_body]), (f"{ofrep}/speedups", [OFREP_BODY])],
            args.duration,
            args.connections,
            rest,
        )
        rows.append(Row("HTTP: raw aiohttp handler (baseline)", "req/s", *baseline, "itself"))
        raw_rate = baseline[0]

        def throughput(name: str, bodies: list[bytes], target: str = "", url: str = gql) -> None:
            rate, p50, p99 = load(url, bodies, args.duration, args.connections, rest)
            rows.append(Row(name, "req/s", rate, p50, p99, "raw handler", rate / raw_rate, target))

        rows.append(
            Row("HTTP: hasFeature", "req/s", *has, "raw handler", has[0] / raw_rate, "≥ 0.6x")
        )
        rows.append(
            Row(
                "HTTP: OFREP single evaluation",
                "req/s",
                *single,
                "raw handler",
                single[0] / raw_rate,
                "≥ hasFeature",
                f"{single[0] / has[0]:.2f}x hasFeature",
            )
        )
        throughput("HTTP: OFREP bulk evaluation", [OFREP_BODY], url=ofrep)
        throughput("HTTP: checks, 1 item", [body(CHECKS_QUERY, {"items": check_items(1)})])
        throughput(
            "HTTP: resource { features }",
            [body(FEATURES_QUERY, {"t": "pipeline", "i": "db8e9a0d"})],
        )
        writes = [
            body(q, {"r": {"type": "bench", "id": f"w{i}"}, "f": "flag"})
            for i in range(200)
            for q in (ADD_QUERY, REMOVE_QUERY)
        ]
        throughput("HTTP: addFeature / removeFeature", writes)

        repeat = 5 if args.quick else 100
        for n in (100, 1000):
            raw_body = body(CHECKS_QUERY, {"items": check_items(n)})
            ids = [f"p{i}" for i in range(n)]
            matrix = body(MATRIX_QUERY, {"type": "pipeline", "ids": ids, "features": ["speedups"]})
            targets = [(f"{raw}/checks", raw_body), (gql, raw_body)]
            names = [f"HTTP: checks, {n} items"]
            if "errors" not in post(gql, json.loads(matrix)):
                targets.append((gql, matrix))
                names.append(f"HTTP: checkMatrix, {n} ids x 1 feature")
            (base50, _), *measured = latency_in_turns(targets, repeat)
            rows.append(
                Row(
                    f"HTTP: raw JSON handler, {n} checks (baseline)",
                    "ms",
                    base50,
                    base50,
                    None,
                    "itself",
                )
            )
            target = "≤ 2x" if n == 1000 else ""
            for name, (p50, p99) in zip(names, measured, strict=True):
                rows.append(
                    Row(name, "ms", p50, p50, p99, "raw JSON handler", p50 / base50, target)
                )

    if not args.skip_workers and len(cpus()) >= 2:
        # Workers need a store that processes share: the same SQLite file for both runs.
        with tempfile.TemporaryDirectory() as tmp:
            store = f"sqlite://{tmp}/workers.db"
            single = 0.0
            for workers in (1, 2):
                port = free_port()
                # The servers may use every core here; wrk shares them, as in production.
                # The supervisor announces the service once every worker serves.
                with running(features_gql(port, workers, store), port, announced="serving"):
                    url = f"http://127.0.0.1:{port}/graphql"
                    post(url, {"query": ADD_QUERY, "variables": {"r": PIPELINE, "f": "speedups"}})
                    rate, p50, p99 = load(url, [has_body], args.duration, args.connections, None)
                name = f"HTTP: hasFeature, sqlite, --workers {workers}"
                if workers == 1:
                    single = rate
                    rows.append(Row(name, "req/s", rate, p50, p99, "itself"))
                else:
                    rows.append(
                        Row(name, "req/s", rate, p50, p99, "--workers 1", rate / single, "≥ 1.7x")
                    )

    if args.mongodb_url or args.skip_mongodb or importlib.util.find_spec("secantus") is None:
        label = "mongodb (MONGODB_URL)" if args.mongodb_url else "mongodb"
        rows.extend(asyncio.run(in_process_rows(args.quick, args.mongodb_url, label)))
    else:
        from benchmarks.mongodb_vs_memory import _secantus_version, embedded

        with tempfile.TemporaryDirectory() as storage, embedded(storage) as url:
            label = f"mongodb (embedded SecantusDB {_secantus_version()})"
            rows.extend(asyncio.run(in_process_rows(args.quick, url, label)))
    return report


def format_table(report: Report) -> str:
    lines = [
        f"load generator: {report.load_generator}; {report.duration_s:g} s per load, "
        f"{report.connections} connections; python {report.machine['python']}, "
        f"{report.machine['cpus']} CPUs",
        "",
        f"{'scenario':<62} {'value':>12} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'ratio':>8}  {'baseline':<18} target",
        "-" * 130,
    ]
    for row in report.rows:
        value = (
            f"{row.value:,.0f} {row.unit}" if row.unit == "req/s" else f"{row.value:.3f} {row.unit}"
        )
        p50 = "" if row.p50_ms is None else f"{row.p50_ms:.2f}"
        p99 = "" if row.p99_ms is None else f"{row.p99_ms:.2f}"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            f"{row.scenario:<62} {value:>12} {p50:>9} {p99:>9} {ratio:>8}  {row.baseline:<18} "
            f"{row.target}{'  (' + row.note + ')' if row.note else ''}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load (5)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("--quick", action="store_true", help="tiny runs: does the harness work?")
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator")
    parser.add_argument("--skip-workers", action="store_true", help="skip the --workers scenarios")
    parser.add_argument(
        "--mongodb-url",
        default=os.environ.get("MONGODB_URL"),
        help="measure the MongoDB store at this URL (default: $MONGODB_URL, else an "
        "embedded SecantusDB server started here)",
    )
    parser.add_argument("--skip-mongodb", action="store_true", help="skip the MongoDB rows")
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "latest.json", help="JSON results"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 1.0)
    report = run(args)
    print(format_table(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    print(f"\nresults written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
