"""A real MongoDB wire-protocol server for the tests: embedded, or ``MONGODB_URL``.

The session fixture ``mongodb_url`` starts the embedded server from PyPI (SecantusDB,
a MongoDB-compatible server on WiredTiger) on 127.0.0.1 and a free port, unless the
``MONGODB_URL`` environment variable names a server to use instead (``tests/conftest.py``
imports the fixtures, so every test module can use them). Every test gets its own
database (``mongodb_database``), dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient


class EmbeddedMongoDB:
    """SecantusDB on 127.0.0.1, which can be stopped and started again on the same port."""

    def __init__(self, storage: Path, port: int = 0) -> None:
        self.storage = storage
        self.port = port
        self._server: object | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @staticmethod
    def version() -> str:
        from secantus import __version__  # type: ignore[import-untyped]

        return f"SecantusDB {__version__} (embedded)"

    def start(self) -> None:
        from secantus import SecantusDBServer

        server = SecantusDBServer(host="127.0.0.1", port=self.port, storage_path=str(self.storage))
        server.start()
        self.port = server.address[1]
        self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # Wake the accept() the server's thread is blocked in, so stop() need not wait
        # for its 2 s join timeout.
        listener = getattr(server, "_socket", None)
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
        server.stop()  # type: ignore[attr-defined]


def with_database(url: str, database: str) -> str:
    """``url`` with its path (the database) replaced by ``database``, options kept."""
    scheme, rest = url.split("://", 1)
    hosts, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{hosts}/{database}" + (f"?{query}" if query else "")


def unique_database(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def mongodb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL, description) of the server the MongoDB tests use."""
    external = os.environ.get("MONGODB_URL")
    if external:
        yield external, "MONGODB_URL"
        return
    server = EmbeddedMongoDB(tmp_path_factory.mktemp("secantus"))
    server.start()
    try:
        yield server.url, server.version()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongodb_url(mongodb_server: tuple[str, str]) -> str:
    return mongodb_server[0]


@pytest.fixture(scope="session")
def mongodb_admin(mongodb_url: str) -> Iterator[MongoClient[dict[str, object]]]:
    client: MongoClient[dict[str, object]] = MongoClient(mongodb_url, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def mongodb_database(mongodb_admin: MongoClient[dict[str, object]]) -> Iterator[str]:
    """A database name no other test uses; dropped after the test."""
    name = unique_database()
    yield name
    mongodb_admin.drop_database(name)
