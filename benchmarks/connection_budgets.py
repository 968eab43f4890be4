"""Fair connection budgets, measured: `python -m benchmarks.connection_budgets` (see --help).

Starts `features-gql serve` in its default configuration (the embedded SQLite store, in
a temporary data directory) with two read tokens and an open-file limit of 1024 (a
common default: `max_connections` is then 768), and runs each scenario against it while
a normal client sends `hasFeature` requests, one at a time, each on a fresh connection
from 127.0.0.1, with its own token:

* **quiet**: nobody else;
* **websockets**: 768 WebSocket upgrades from 127.0.0.2 that never send
  `connection_init`, each upgrading again as soon as it is closed;
* **bodies**: 200 requests from 127.0.0.2 with the other read token whose bodies
  arrive a byte a second, each sending another as soon as it is answered or closed.

The misbehaving client runs in a process of its own (so that its work does not delay
the normal client's measurements); on a machine with two cores the server is pinned to
one and the clients to the other. It prints, per scenario, the normal client's success
rate and latencies, what became of the misbehaving connections, and what the server
counted and logged. It measures a property of the service (does one address, or one
token, deny service to others?), not its speed.

    python -m benchmarks.connection_budgets --duration 20
    python -m benchmarks.connection_budgets --source ../before   # another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks.run import free_port, load_cpus, pinned, server_cpus

ATTACKER = "127.0.0.2"
NORMAL = "127.0.0.1"
HAS = json.dumps(
    {
        "query": "query Has($r: ResourceInput!, $f: String!) "
        "{ hasFeature(resource: $r, feature: $f) }",
        "variables": {"r": {"type": "pipeline", "id": "p1"}, "f": "speedups"},
    },
    separators=(",", ":"),
)
#: The declared length of a slow body: at a byte a second, it never completes.
SLOW_BODY_LENGTH = 4096
SCENARIOS = ("quiet", "websockets", "bodies")


@dataclass
class NormalClient:
    answered: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.answered + sum(self.failed.values())

    def percentile(self, share: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _request(token: str) -> bytes:
    return (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(HAS)}\r\n"
        f"Connection: close\r\n\r\n{HAS}"
    ).encode()


async def _normal_client(port: int, token: str, duration: float, patience: float) -> NormalClient:
    """One request at a time on a fresh connection; a failure is anything but a 200
    within ``patience`` seconds (connecting included)."""
    result = NormalClient()
    request = _request(token)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        started = time.monotonic()
        writer = None
        try:
            async with asyncio.timeout(patience):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(NORMAL, 0)
                )
                writer.write(request)
                status_line = await reader.readline()
                await reader.read()  # to the close: the whole answer
            if status_line.startswith(b"HTTP/1.1 200 "):
                result.answered += 1
                result.latencies.append(time.monotonic() - started)
            else:
                status = status_line.split(b" ")[1].decode() if status_line else "no answer"
                result.failed[status] += 1
        except TimeoutError:
            result.failed["timeout"] += 1
        except OSError as exc:
            result.failed[type(exc).__name__] += 1
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(0.01)
    return result


# -- the misbehaving client ---------------------------------------------------------------

_UPGRADE = (
    b"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
)


async def _idle_websocket(port: int, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Upgrades, never sends connection_init; upgrades again whenever it is closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(ATTACKER, 0)
            )
        except OSError:
            counts["connect failures"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            writer.write(_UPGRADE)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101 "):
                counts[f"refused {head.split(b' ')[1].decode()}"] += 1
                continue
            counts["upgraded"] += 1
            reading = asyncio.ensure_future(reader.read(256))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((reading, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if reading.done():
                frame = reading.result()
                code = int.from_bytes(frame[2:4], "big") if frame[:1] == b"\x88" else None
                counts[f"closed with {code}" if code else "closed without a frame"] += 1
            else:
                reading.cancel()
        except (OSError, asyncio.IncompleteReadError):
            counts["closed before the upgrade"] += 1
        finally:
            writer.close()


async def _slow_body(port: int, token: str, stop: asyncio.Event, counts: Counter[str]) -> None:
    """A request whose body arrives a byte a second; another once it is answered."""
    head = (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {SLOW_BODY_LENGTH}\r\n\r\n{{"
    ).encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(ATTACKER, 0)
            )
        except OSError:
            counts["connect failures"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            writer.write(head)
            counts["sent"] += 1
            answer = asyncio.ensure_future(reader.readline())
            while not stop.is_set() and not answer.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(answer), 1.0)
                if not answer.done():
                    writer.write(b" ")
            if answer.done():
                line = answer.result()
                counts[f"answered {line.split(b' ')[1].decode()}" if line else "closed"] += 1
            else:
                answer.cancel()
        except OSError:
            counts["closed"] += 1
        finally:
            writer.close()


def _attack(
    scenario: str, port: int, token: str, connections: int, stop: Event, report: Connection
) -> None:
    """The misbehaving client's process: runs until ``stop``, then reports its counts."""
    counts: Counter[str] = Counter()

    async def run() -> None:
        stopping = asyncio.Event()
        if scenario == "websockets":
            clients = [_idle_websocket(port, stopping, counts) for _ in range(connections)]
        else:
            clients = [_slow_body(port, token, stopping, counts) for _ in range(connections)]
        waiting = asyncio.ensure_future(asyncio.to_thread(stop.wait))
        tasks = [asyncio.ensure_future(client) for client in clients]
        await waiting
        stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    report.send(dict(counts))


# -- the server ------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(
    source: Path | None, nofile: int, tokens: dict[str, str], log: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        config = Path(data) / "features.toml"
        config.write_text(
            "".join(
                f'[auth.tokens.{name}]\nscopes = ["read"]\n'
                f'sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n'
                for name, secret in tokens.items()
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")}
        env["XDG_DATA_HOME"] = data  # the default SQLite file, in a place of its own
        if source is not None:
            env["PYTHONPATH"] = str(source.resolve())
        command = [
            sys.executable, "-m", "features_gql.cli", "serve", "--port", str(port),
            "--config", str(config), "--log-format", "json",
        ]  # fmt: skip

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with log.open("wb") as output:
            process = subprocess.Popen(
                pinned(command, server_cpus(1)),
                env=env,
                cwd=source,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=limit,
            )
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                            break
                    except OSError:
                        if time.monotonic() > deadline or process.poll() is not None:
                            raise SystemExit(
                                f"the server did not start: {log.read_text()}"
                            ) from None
                        time.sleep(0.1)
                yield port, process
            finally:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _dropped(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.findall(
        r'^features_gql_connections_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M
    )
    return {reason: int(float(value)) for reason, value in found if float(value)}


def _log_summary(log: Path) -> dict[str, Any]:
    lines = log.read_text(errors="replace").splitlines()
    warnings = [
        line for line in lines if '"level": "WARNING"' in line or '"level": "ERROR"' in line
    ]
    return {
        "log lines": len(lines),
        "warning/error lines": len(warnings),
        "tracebacks": sum("Traceback" in line for line in lines),
        "'Unhandled exception'": sum("Unhandled exception" in line for line in lines),
    }


def run_scenario(args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    tokens = {"normal": secrets.token_hex(16), "flood": secrets.token_hex(16)}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with _server(args.source, args.nofile, tokens, log) as (port, _):
            attacker = None
            stop = multiprocessing.get_context("fork").Event()
            ours, theirs = multiprocessing.get_context("fork").Pipe()
            if scenario != "quiet":
                connections = args.websockets if scenario == "websockets" else args.bodies
                attacker = multiprocessing.get_context("fork").Process(
                    target=_attack,
                    args=(scenario, port, tokens["flood"], connections, stop, theirs),
                )
                attacker.start()
                time.sleep(args.ramp)
            normal = asyncio.run(
                _normal_client(port, tokens["normal"], args.duration, args.patience)
            )
            attack: dict[str, int] = {}
            if attacker is not None:
                stop.set()
                if ours.poll(60):
                    attack = ours.recv()
                attacker.join(30)
            dropped = _dropped(port)
        logged = _log_summary(log)
    p50, p99 = normal.percentile(0.5), normal.percentile(0.99)
    return {
        "scenario": scenario,
        "normal requests": normal.sent,
        "answered 200": normal.answered,
        "success %": round(100 * normal.answered / normal.sent, 2) if normal.sent else 0.0,
        "failures": dict(normal.failed),
        "p50 ms": None if p50 is None else round(p50 * 1000, 1),
        "p99 ms": None if p99 is None else round(p99 * 1000, 1),
        "max ms": round(max(normal.latencies) * 1000, 1) if normal.latencies else None,
        "misbehaving client": attack,
        "server dropped": dropped,
        **logged,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    parser.add_argument("--duration", type=float, default=20, help="seconds of normal requests")
    parser.add_argument("--ramp", type=float, default=3, help="seconds of attack before them")
    parser.add_argument("--patience", type=float, default=5, help="normal request timeout")
    parser.add_argument("--websockets", type=int, default=768, help="idle WebSocket upgrades")
    parser.add_argument("--bodies", type=int, default=200, help="slow bodies")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's open-file limit")
    parser.add_argument("--source", type=Path, help="run the server from this checkout")
    parser.add_argument("--output", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max(args.websockets, args.bodies) + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    cores = load_cpus(1)
    if cores:
        os.sched_setaffinity(0, cores)
    results = [run_scenario(args, scenario) for scenario in args.scenario or SCENARIOS]
    print(
        f"features-gql serve (default configuration, open-file limit {args.nofile}); a normal "
        f"client from {NORMAL}, one request at a time on a fresh connection, for "
        f"{args.duration:g} s (timeout {args.patience:g} s); misbehaving from {ATTACKER}:"
    )
    print("| scenario | normal requests | success | p50 | p99 | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in results:
        print(
            f"| {row['scenario']} | {row['normal requests']} | {row['success %']} % "
            f"| {row['p50 ms']} ms | {row['p99 ms']} ms | {row['max ms']} ms |"
        )
    for row in results:
        print(f"\n{row['scenario']}:")
        for key in ("failures", "misbehaving client", "server dropped"):
            print(f"  {key:<24} {row[key]}")
        for key in ("log lines", "warning/error lines", "tracebacks", "'Unhandled exception'"):
            print(f"  {key:<24} {row[key]}")
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
