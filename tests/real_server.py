"""`features-gql serve` as a real process, with an open-file limit of the test's choosing
and its log in a file (a pipe nobody reads would stall a chatty server)."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CLI = [sys.executable, "-m", "features_gql.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServeProcess:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Any) -> None:
        self.process = process
        self.port = port
        self._log = log
        self._final_log: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        if self._final_log is not None:
            return self._final_log
        self._log.flush()
        with open(self._log.name, encoding="utf-8", errors="replace") as file:
            return file.read()

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines (the server runs with --log-format json)."""
        lines = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def open_file_limits(self) -> tuple[int, int]:
        soft, hard = resource.prlimit(self.process.pid, resource.RLIMIT_NOFILE)
        return soft, hard

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._final_log is None:
            self._final_log = self.log_text()
        return self._final_log


@contextmanager
def serve(
    *args: str,
    env: dict[str, str] | None = None,
    open_files: tuple[int, int] | None = None,
) -> Iterator[ServeProcess]:
    """Start `features-gql serve --store memory --log-format json` on a free port, wait
    until /healthz answers, and stop it afterwards."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEATURES_GQL_")}
    environment.update(env or {})

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        process = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--store",
                "memory",
                "--log-format",
                "json",
                "--port",
                str(port),
                *args,
            ],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
        server = ServeProcess(process, port, log)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"server exited: {server.log_text()}")
                try:
                    with urllib.request.urlopen(f"{server.url}/healthz", timeout=1):
                        break
                except (urllib.error.URLError, ConnectionError):
                    if time.monotonic() > deadline:
                        raise AssertionError("server did not start within 30 s") from None
                    time.sleep(0.05)
            yield server
        finally:
            server.stop()
