"""A slow-client drill: `python -m benchmarks.slow_clients` (see --help).

Starts `features-gql serve` on 127.0.0.1 with a lowered open-file limit, opens more
connections than that limit which send a request's headers one line at a time, and
meanwhile sends normal requests, each on a fresh connection. It prints how many normal
requests were answered, how long they took, and what the server logged. It measures a
property of the service (does a slow client deny service to others?), not its speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SERVE = [sys.executable, "-m", "features_gql.cli", "serve", "--store", "memory"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _limit_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


async def _slow_client(
    port: int, interval: float, stop: asyncio.Event, counts: dict[str, int], reconnect: bool
) -> None:
    """One slow client: a request's headers, a line every `interval` seconds, never
    finished; with `reconnect`, it connects again whenever the server closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout=5
            )
        except (OSError, TimeoutError):
            counts["connect failures"] += 1
            await asyncio.sleep(interval)
            continue
        counts["opened"] += 1
        try:
            writer.write(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            await writer.drain()
            line = 0
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
                if reader.at_eof() or writer.is_closing():
                    counts["closed by the server"] += 1
                    break
                line += 1
                writer.write(f"X-Slow-{line}: {'a' * 10}\r\n".encode())
                await writer.drain()
        except OSError:
            counts["closed by the server"] += 1
        finally:
            writer.close()
        if not reconnect:
            return


async def _normal_requests(
    port: int, duration: float, patience: float, gap: float
) -> tuple[int, int, list[float]]:
    body = json.dumps({"query": '{ hasFeature(resource: {type: "a", id: "b"}, feature: "f") }'})
    answered = failed = 0
    latencies: list[float] = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout=patience
            )
            writer.write(
                f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
            )
            status = await asyncio.wait_for(reader.readline(), timeout=patience)
            writer.close()
            if status.startswith(b"HTTP/1.1 200"):
                answered += 1
                latencies.append(time.monotonic() - started)
            else:
                failed += 1
        except (OSError, TimeoutError):
            failed += 1
        await asyncio.sleep(gap)
    return answered, failed, latencies


async def _drill(args: argparse.Namespace, port: int) -> dict[str, object]:
    stop = asyncio.Event()
    counts = {"opened": 0, "closed by the server": 0, "connect failures": 0}
    slow = [
        asyncio.create_task(_slow_client(port, args.interval, stop, counts, args.reconnect))
        for _ in range(args.connections)
    ]
    await asyncio.sleep(args.ramp)
    answered, failed, latencies = await _normal_requests(
        port, args.duration, args.timeout, args.gap
    )
    stop.set()
    await asyncio.gather(*slow, return_exceptions=True)
    return {
        **{f"slow connections {key}": value for key, value in counts.items()},
        "normal requests answered": answered,
        "normal requests failed": failed,
        "median answer ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "slowest answer ms": round(max(latencies) * 1000, 1) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1100, help="slow connections")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's open-file limit")
    parser.add_argument("--duration", type=float, default=30, help="seconds of normal requests")
    parser.add_argument("--interval", type=float, default=2, help="seconds between header lines")
    parser.add_argument("--ramp", type=float, default=3, help="seconds to open slow connections")
    parser.add_argument("--timeout", type=float, default=3, help="normal request timeout")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between normal requests")
    parser.add_argument(
        "--reconnect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="slow clients connect again when the server closes them (default: yes)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="server environment"
    )
    args = parser.parse_args(argv)
    needed = args.connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")}
    env.update(dict(item.split("=", 1) for item in args.env))
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            [*SERVE, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _limit_files(args.nofile),
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.05)
            report = asyncio.run(_drill(args, port))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.seek(0)
        text = log.read()
    lines = text.splitlines()
    report.update(
        {
            "server log lines": len(lines),
            "server log bytes": len(text.encode()),
            "lines saying 'Too many open files'": sum("Too many open files" in x for x in lines),
            "lines saying 'Traceback'": sum("Traceback" in x for x in lines),
            "WARNING or ERROR lines": sum(" WARNING " in x or " ERROR " in x for x in lines),
            "INFO lines (request and store logs)": sum(" INFO " in x for x in lines),
        }
    )
    print(
        f"{args.connections} slow connections (a header line every {args.interval:g} s"
        f"{', reconnecting' if args.reconnect else ''}), "
        f"server open-file limit {args.nofile}, normal requests for {args.duration:g} s "
        f"(timeout {args.timeout:g} s):"
    )
    for key, value in report.items():
        print(f"  {key:<40} {value}")
    if args.env:
        print("  server environment: " + " ".join(args.env))
    warnings = [x for x in lines if " WARNING " in x or " ERROR " in x]
    for line in warnings[:12]:
        print(f"  log: {line[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
