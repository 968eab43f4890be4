"""A real PostgreSQL server for the tests: started here, or ``POSTGRES_URL``.

The session fixture ``postgres_url`` runs ``initdb`` and ``pg_ctl`` from the PostgreSQL
installation on this machine (Debian's ``postgresql`` package: ``/usr/lib/postgresql/
<version>/bin``) in a temporary data directory, listening on 127.0.0.1 and a free port,
unless the ``POSTGRES_URL`` environment variable names a server to use instead
(``tests/conftest.py`` imports the fixtures, so every test module can use them). Every
test gets its own schema (``postgres_schema``), dropped afterwards.

PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` user the Debian package creates (else ``nobody``), and its data directory is
made under the system's temporary directory, owned by that user. When no installation is
found, the fixtures fail with a message saying how to get one: a test that needs
PostgreSQL never skips silently.

The cluster is created once (``initdb`` takes about two seconds); a test that stops and
restarts a server of its own gets a copy of that data directory. ``fsync`` is off: these
servers are stopped cleanly or not at all, and the tests kill features-gql, never
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

#: The user the server's data directory belongs to and the role the tests log in as.
ROLE = "features"
INSTALL_HINT = (
    "PostgreSQL is needed for these tests: install it (apt-get install -y postgresql), "
    "set POSTGRES_BIN_DIR to the directory holding initdb and pg_ctl, or set POSTGRES_URL "
    "to a server to use"
)


def binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: ``POSTGRES_BIN_DIR`` when set,
    else the newest version installed, else the ones on ``PATH``."""
    candidates: list[Path] = []
    if os.environ.get("POSTGRES_BIN_DIR"):
        candidates.append(Path(os.environ["POSTGRES_BIN_DIR"]))
    installed = Path("/usr/lib/postgresql")
    if installed.is_dir():
        versions = [p for p in installed.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    if os.environ.get("POSTGRES_BIN_DIR"):
        candidates = candidates[:1]  # what was asked for, or nothing
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise RuntimeError(INSTALL_HINT)


def server_user() -> str | None:
    """Who runs the server: None for the current user, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalPostgres:
    """A PostgreSQL cluster in a directory of its own, on 127.0.0.1; stop and start at will."""

    def __init__(self, root: Path, password: str, port: int = 0) -> None:
        self.root = root
        self.password = password
        self.port = port or free_port()
        self.bin = binaries()
        self.user = server_user()

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls, port: int = 0) -> LocalPostgres:
        """A new cluster in a new temporary directory (``initdb``)."""
        binaries()  # before making the directory: without PostgreSQL, leave nothing behind
        server = cls(_private_directory(), secrets.token_urlsafe(12), port)
        server._initdb()
        return server

    def copy(self, port: int = 0) -> LocalPostgres:
        """A new cluster with this (stopped) cluster's data, in a new temporary directory."""
        other = LocalPostgres(_private_directory(), self.password, port)
        shutil.copytree(self.data, other.data, symlinks=True)
        other._chown()
        return other

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bin / "pg_ctl"), "--version"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip().replace("pg_ctl (PostgreSQL) ", "PostgreSQL ")

    def _run(
        self, *command: str, check: bool = True, cores: set[int] | None = None
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run(
            [*prefix, *command],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
        )

    def _chown(self) -> None:
        if self.user is None:
            return
        entry = pwd.getpwnam(self.user)
        for path in [self.root, *self.root.rglob("*")]:
            os.lchown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        self._chown()
        try:
            self._run(
                str(self.bin / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                ROLE,
                "--pwfile",
                str(password_file),
                # Passwords over TCP (what the store uses), so redaction is tested for real.
                "--auth-host",
                "scram-sha-256",
                "--auth-local",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr or exc.stdout}") from exc
        finally:
            password_file.unlink()

    def start(self, cores: set[int] | None = None, *, durable: bool = False) -> None:
        """Start the server and wait until it accepts connections.

        ``cores`` pins it to those CPUs; ``durable`` keeps PostgreSQL's default of
        flushing every commit to disk (benchmarks), where tests turn it off.
        """
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
            "shared_buffers": "32MB",
        }
        if not durable:
            settings |= {"fsync": "off", "full_page_writes": "off"}
        options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        result = self._run(
            str(self.bin / "pg_ctl"),
            "start",
            "--wait",
            "--timeout",
            "60",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.root / "server.log"),
            "-o",
            options,
            check=False,
            cores=cores,
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}{result.stdout}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: abort sessions, shut down cleanly)."""
        if (self.data / "postmaster.pid").exists():
            self._run(
                str(self.bin / "pg_ctl"),
                "stop",
                "--wait",
                "--pgdata",
                str(self.data),
                "--mode",
                mode,
                check=False,
            )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _private_directory() -> Path:
    """A new directory under the system's temporary directory that the server user owns.

    Not under pytest's temporary directory: that one is private to the current user,
    and the server may run as another.
    """
    root = Path(tempfile.mkdtemp(prefix="features-gql-pg-"))
    root.chmod(0o700)
    return root


def with_database(url: str, database: str) -> str:
    """``url`` with its path (the database) replaced by ``database``, options kept."""
    scheme, rest = url.split("://", 1)
    hosts, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{hosts}/{database}" + (f"?{query}" if query else "")


def with_schema(url: str, schema: str) -> str:
    """``url`` with the store's ``schema`` query parameter set."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def unique_schema(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[LocalPostgres]:
    """A stopped, freshly initialised cluster that servers of single tests are copied from."""
    template = LocalPostgres.create()
    yield template
    template.remove()


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(URL, description) of the server the PostgreSQL tests share."""
    external = os.environ.get("POSTGRES_URL")
    if external:
        yield external, "POSTGRES_URL"
        return
    template: LocalPostgres = request.getfixturevalue("postgres_template")
    server = template.copy()
    server.start()
    try:
        yield server.url, f"{server.version()} (started by the tests)"
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: tuple[str, str]) -> str:
    return postgres_server[0]


@pytest.fixture(scope="session")
def postgres_admin(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain (synchronous) psycopg connection for setting up and inspecting data."""
    connection = psycopg.connect(postgres_url, autocommit=True, connect_timeout=10)
    yield connection
    connection.close()


@pytest.fixture
def postgres_schema(postgres_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema name no other test uses; dropped (with everything in it) after the test."""
    name = unique_schema()
    yield name
    drop_schema(postgres_admin, name)


def drop_schema(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop ``name`` and everything in it, whoever still holds it.

    This runs in the event loop's thread, blocking it: a test whose server is stopped
    after this fixture (fixtures are torn down in reverse order) may still have a store
    transaction open on the schema that needs the loop to finish, and the DROP would wait
    for it forever. So the DROP waits a short while, then ends the sessions that hold
    locks on the schema's tables and drops it."""
    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
    admin.execute("SET lock_timeout = '2s'")
    try:
        for _ in range(5):
            try:
                admin.execute(drop)
                return
            except psycopg.errors.LockNotAvailable:
                admin.execute(
                    """
                    SELECT pg_terminate_backend(l.pid)
                    FROM pg_locks l
                    JOIN pg_class c ON c.oid = l.relation
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = %s AND l.pid <> pg_backend_pid()
                    """,
                    (name,),
                )
        admin.execute(drop)
    finally:
        admin.execute("SET lock_timeout = 0")


@pytest.fixture
def own_postgres(postgres_template: LocalPostgres) -> Iterator[LocalPostgres]:
    """A server this test may stop and start (never POSTGRES_URL's); not started yet."""
    server = postgres_template.copy()
    yield server
    server.remove()
