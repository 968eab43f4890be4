"""The ``mongodb`` store: many stateless API instances in front of one MongoDB deployment.

Selected by ``--store mongodb://host:port/dbname`` (any MongoDB URI, ``mongodb+srv://``
included) or a ``[store]`` table with ``plugin = "mongodb"``. The same code runs on
PyMongo's native async client (``driver = "pymongo"``, the default) and on Motor
(``driver = "motor"``, for applications that already embed it).

Layout (``collection_prefix`` defaults to ``features_``):

``<prefix>assignments``
    One document per (resource type, resource id, feature):
    ``{type, id, feature, at, actor}``. Unique index ``resource_feature`` on
    ``(type, id, feature)`` serves ``has``, ``check_many`` and ``features_of_many``
    and makes a concurrent second insert of the same assignment impossible; index
    ``feature_resource`` on ``(feature, type, id)`` serves ``resources_with``, which
    pages by index range (``id > after.id`` within ``after.type``, then ``type >
    after.type``), never by skip.
``<prefix>changes``
    The change log: ``{_id: revision, op, type, id, feature, at, actor}``. The
    revision is the ``_id``, so ``changes_since`` is a range scan of the primary key
    and a revision can never be logged twice.
``<prefix>counters``
    ``{_id: "revision", seq}``: the last revision handed out. Created at start-up
    (from the highest logged revision, so a lost counter is rebuilt), never upserted
    on the write path.

Consistency scheme
------------------
A change must take effect and be logged under the next revision as one step, even
when several API processes write to the same database. Two modes, chosen by the
``transactions`` option (``auto`` picks the first whenever the server supports it):

**Transactions** (replica sets and sharded clusters, what production deployments and
Atlas run; the embedded test server advertises a replica set). One
multi-document transaction per write: upsert/delete the assignment; only if that
changed something, ``$inc`` the counter and insert the change event under the new
value; commit. All three commit together or not at all, so every applied change has
exactly one event and no event exists for a change that did not happen. The counter
document is written by every changing transaction, so two concurrent changing
transactions always write-conflict on it: MongoDB lets one commit and aborts the
other with ``TransientTransactionError``, which is retried with jittered backoff. A
transaction therefore reads the counter only after every lower revision committed:
revisions are dense, strictly increasing, and in commit order. A reader of
``changes_since`` never sees revision N+1 before N, so a follower that remembers the
last revision it read never skips an event. Concurrent upserts of the same
assignment conflict the same way, and the retry sees the document and reports
``changed = False``.

**No transactions** (a standalone ``mongod``, or ``transactions = "off"``). A write
is three single-document operations: the upsert/delete (whose result says whether
anything changed), then ``$inc`` on the counter, then the insert of the event. Each
step is atomic and retryable, and within one process writes are serialised, but
across processes two writers can hold revisions N and N+1 with N+1 logged first, and
a process that dies after the first step leaves its change applied without an event:
a hole in the revisions if it had taken one, no trace otherwise. ``changes_since``
therefore returns only the gap-free run after the revision asked for, and skips a
hole only once the event after it is older than ``gap_grace_seconds`` (its writer has
certainly given up): followers never skip an event that is still being written, at
the cost of waiting that long behind a writer that died. Use a replica set (one node
is enough) when the change log must be exact.

Either way, every process serialises its own writes through one lock: concurrent
writes from one process would only conflict with each other on the counter.

Failures: server selection timeouts, refused or lost connections and server errors
become :class:`StoreUnavailable`; network and server-side timeouts become
:class:`StoreTimeout`; a write that keeps conflicting becomes :class:`StoreConflict`.
A write whose commit outcome is unknown (the connection broke during the commit)
fails, but may have been applied, with its event: repeating it is safe, since adds
and removes are idempotent and the repeat reports ``changed = False``.
Once the driver's monitors have found every server unreachable, calls fail at once
(``StoreUnavailable``) rather than each waiting out server selection, while one
selection at a time keeps looking in the background so that a returning database is
noticed quickly. The driver's timeouts default to values inside the API's 2 s
deadline. The store starts when MongoDB is down: indexes and the counter are set up on
the first call that reaches the server, and every call after an outage reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from urllib.parse import unquote

from pymongo import ASCENDING, ReturnDocument, uri_parser
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from features_gql.domain import (
    Assignment,
    ChangeEvent,
    ChangeOp,
    Resource,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import (
    ChangesTrimmed,
    ConfigError,
    StoreConflict,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from features_gql.stores import Store, StoreBuilder, StoreOptions, redact_url

log = logging.getLogger("features_gql.stores.mongodb")

Doc = dict[str, Any]
Driver = Literal["pymongo", "motor"]
TransactionMode = Literal["auto", "on", "off"]

DEFAULT_URL = "mongodb://localhost:27017"
DEFAULT_DATABASE = "features_gql"
DEFAULT_PREFIX = "features_"
# Inside the API's default 2 s deadline: the driver gives up first and says why.
DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 1500
DEFAULT_CONNECT_TIMEOUT_MS = 1000
DEFAULT_SOCKET_TIMEOUT_MS = 1500
DEFAULT_GAP_GRACE_SECONDS = 30.0

ASSIGNMENTS_INDEX = "resource_feature"
BY_FEATURE_INDEX = "feature_resource"
COUNTER_ID = "revision"

#: Ids per query in bulk reads: keeps each query far below MongoDB's 16 MiB limit
#: (an id is at most 256 characters, 1 KiB of UTF-8) while the API's largest batch
#: (10,000) still takes at most two queries, sent together.
_IDS_PER_QUERY = 5000
#: How long a write retries transaction conflicts before giving up with StoreConflict.
_CONFLICT_BUDGET_SECONDS = 1.5
_COMMAND_NOT_FOUND = 59
_NAMESPACE_EXISTS = 48
#: Error codes that mean "the server gave up on time" (MaxTimeMSExpired and friends).
_TIMEOUT_CODES = frozenset({50, 202, 262})
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_IP_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?\]")
_DB_NAME = re.compile(r'[^/\\. "$*<>:|?\x00]{1,63}')
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{0,64}")
_URI_OPTIONS = {
    "server_selection_timeout_ms": "serverselectiontimeoutms",
    "connect_timeout_ms": "connecttimeoutms",
    "socket_timeout_ms": "sockettimeoutms",
}


# -- errors ---------------------------------------------------------------------------


def translate_error(exc: PyMongoError) -> StoreError:
    """The typed store error for a driver error (messages go to logs, not to clients)."""
    if isinstance(exc, ServerSelectionTimeoutError):
        # The driver found no usable server in time: the database is down or unreachable.
        return StoreUnavailable(f"no MongoDB server available: {exc}")
    if exc.timeout or (isinstance(exc, OperationFailure) and exc.code in _TIMEOUT_CODES):
        # Network timeouts, pool wait timeouts, maxTimeMS and write concern timeouts.
        return StoreTimeout(f"MongoDB did not answer in time: {exc}")
    if isinstance(exc, ConnectionFailure):
        return StoreUnavailable(f"connection to MongoDB failed: {exc}")
    if isinstance(exc, OperationFailure):
        return StoreUnavailable(f"MongoDB refused the operation (code {exc.code}): {exc}")
    return StoreUnavailable(f"MongoDB error: {type(exc).__name__}: {exc}")


class _Translated:
    """``with _TRANSLATED:`` turns driver errors raised in the block into store errors."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, PyMongoError):
            raise translate_error(exc) from exc


_TRANSLATED = _Translated()


def _is_transient(exc: PyMongoError) -> bool:
    """A conflict the whole transaction may simply be retried after."""
    return exc.has_error_label("TransientTransactionError") or isinstance(exc, DuplicateKeyError)


# -- configuration --------------------------------------------------------------------


def database_from_url(url: str) -> str | None:
    """The database named in a MongoDB URI's path (``mongodb://h/dbname?opts``), if any."""
    rest = url.split("://", 1)[1] if "://" in url else url
    _, slash, tail = rest.partition("/")
    if not slash:
        return None
    name = unquote(tail.split("?", 1)[0])
    return name or None


def check_url(url: str) -> None:
    """Refuse a URI the driver could never connect with, at configuration time.

    The driver only looks at hosts when it connects, so ``mongodb://bad host:27017``
    would otherwise start a service whose every call fails. ``mongodb+srv://`` URIs
    are checked without the DNS lookup that resolving them takes.
    """
    rest = url.split("://", 1)[1]
    hosts = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    for entry in hosts.split(","):
        host, port = _host_and_port(entry)
        if not (_HOSTNAME.fullmatch(host) or _IP_LITERAL.fullmatch(host)) and not (
            unquote(entry).endswith(".sock")
        ):
            raise ConfigError(
                f"invalid host {host!r} in MongoDB URI {redact_url(url)!r}: a host name, "
                "an IP address, or [an IPv6 address], each with an optional :port"
            )
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"invalid port {port!r} in MongoDB URI {redact_url(url)!r}")
    if url.lower().startswith("mongodb://"):
        try:
            uri_parser.parse_uri(url)  # options, credentials, escaping; no network
        except (PyMongoError, ValueError) as exc:
            raise ConfigError(f"invalid MongoDB URI {redact_url(url)!r}: {exc}") from None


def _host_and_port(entry: str) -> tuple[str, str | None]:
    if entry.startswith("["):
        host, _, tail = entry.partition("]")
        return host + "]", tail[1:] if tail.startswith(":") else None
    host, colon, port = entry.partition(":")
    return host, port if colon else None


def uri_option_names(url: str) -> set[str]:
    """The (lower-cased) option names in a MongoDB URI's query string."""
    query = url.split("?", 1)[1] if "?" in url else ""
    return {part.split("=", 1)[0].strip().lower() for part in query.split("&") if part.strip()}


class MongoDBStore(Store):
    """Feature assignments and their change log in three MongoDB collections."""

    name = "mongodb"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        database: str | None = None,
        collection_prefix: str = DEFAULT_PREFIX,
        driver: Driver = "pymongo",
        transactions: TransactionMode = "auto",
        server_selection_timeout_ms: int | None = DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
        connect_timeout_ms: int | None = DEFAULT_CONNECT_TIMEOUT_MS,
        socket_timeout_ms: int | None = DEFAULT_SOCKET_TIMEOUT_MS,
        gap_grace_seconds: float = DEFAULT_GAP_GRACE_SECONDS,
        client_options: Mapping[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        """Timeouts set to None are left to the URI (or the driver's default).

        An application that already has a client (``pymongo.AsyncMongoClient`` or
        Motor's ``AsyncIOMotorClient``) passes it as ``client`` with its ``database``:
        the store then uses it, with the application's settings, and never closes it.
        """
        if client is not None:
            driver = "motor" if type(client).__module__.startswith("motor") else "pymongo"
        if not url.lower().startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError(
                f"not a MongoDB URI: {url.split('@')[-1]!r} "
                "(expected mongodb://host:port/dbname or mongodb+srv://...)"
            )
        check_url(url)
        database = database or database_from_url(url) or DEFAULT_DATABASE
        if _DB_NAME.fullmatch(database) is None:
            raise ConfigError(
                f"invalid MongoDB database name {database!r}: 1-63 characters, none of "
                '/\\. "$*<>:|?'
            )
        if _PREFIX.fullmatch(collection_prefix) is None:
            raise ConfigError(
                f"invalid collection_prefix {collection_prefix!r}: up to 64 characters of "
                "A-Z, a-z, 0-9, '_', '-' and '.'"
            )
        if driver not in ("pymongo", "motor"):
            raise ConfigError(f"driver must be 'pymongo' or 'motor', got {driver!r}")
        if transactions not in ("auto", "on", "off"):
            raise ConfigError(f"transactions must be 'auto', 'on' or 'off', got {transactions!r}")
        self.url = url
        self.database = database
        self.collection_prefix = collection_prefix
        self.driver: Driver = driver
        self.transactions: TransactionMode = transactions
        self.gap_grace = timedelta(seconds=gap_grace_seconds)
        self.name = "mongodb" if driver == "pymongo" else "mongodb(motor)"
        self._client_options: dict[str, Any] = {
            "tz_aware": True,
            "appname": "features-gql",
            **(client_options or {}),
        }
        for key, value in (
            ("serverSelectionTimeoutMS", server_selection_timeout_ms),
            ("connectTimeoutMS", connect_timeout_ms),
            ("socketTimeoutMS", socket_timeout_ms),
        ):
            if value is not None:
                self._client_options[key] = value
        self._given_client = client
        self._client: Any = None
        self._db: AsyncDatabase[Doc] | None = None
        self._ready = False
        self._setup: asyncio.Future[None] | None = None
        self._looking: asyncio.Future[None] | None = None
        self._write_lock = asyncio.Lock()
        #: Decided at set-up: whether writes run in multi-document transactions.
        self.transactional = False
        #: What the server said about itself at set-up (version, replica set).
        self.server_info: dict[str, Any] = {}

    # -- connection and set-up --------------------------------------------------------

    def _make_client(self) -> Any:
        try:
            if self.driver == "motor":
                from motor.motor_asyncio import AsyncIOMotorClient

                return AsyncIOMotorClient(self.url, **self._client_options)
            from pymongo import AsyncMongoClient

            return AsyncMongoClient(self.url, **self._client_options)
        except ConfigurationError as exc:
            raise ConfigError(f"invalid MongoDB configuration: {exc}") from exc

    def _collection(self, suffix: str) -> AsyncCollection[Doc]:
        # Motor's collections have the same coroutine methods as PyMongo's async ones.
        return self._database[f"{self.collection_prefix}{suffix}"]

    @property
    def _database(self) -> AsyncDatabase[Doc]:
        if self._db is None:
            raise StoreUnavailable("the mongodb store is not open")
        return self._db

    @property
    def assignments(self) -> AsyncCollection[Doc]:
        return self._collection("assignments")

    @property
    def changes(self) -> AsyncCollection[Doc]:
        return self._collection("changes")

    @property
    def counters(self) -> AsyncCollection[Doc]:
        return self._collection("counters")

    def describe(self) -> str:
        database = f", database {self.database}" if self.database else ""
        return f"{self.name} {redact_url(self.url)}{database}"

    async def open(self) -> None:
        """Create the client and try the set-up; a server that is down is not fatal."""
        self._client = self._given_client or self._make_client()
        self._db = cast(AsyncDatabase[Doc], self._client[self.database])
        try:
            await self._ensure_ready()
        except StoreError as exc:
            log.warning(
                "the mongodb store could not set itself up yet; it retries on every call: %s",
                exc,
            )

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        self._ready = False
        for attempt in (self._setup, self._looking):
            if attempt is not None and not attempt.done():
                attempt.cancel()
        self._setup = self._looking = None
        if client is None or client is self._given_client:
            return
        if self.driver == "motor":
            client.close()
        else:
            await client.close()

    async def _ensure_ready(self) -> None:
        """Set up indexes and the counter once, on the first call that reaches the server.

        Concurrent callers share one attempt (and its failure): while MongoDB is down
        they fail together instead of queueing for a server selection timeout each.
        """
        unreachable = self._known_unreachable()
        if unreachable is not None:
            self._keep_looking()
            raise unreachable
        if self._ready:
            return
        if self._setup is None or self._setup.done():
            self._setup = asyncio.ensure_future(self._set_up_once())
            self._setup.add_done_callback(_consume)
        # Shielded: a caller that hits its deadline must not cancel everyone's attempt.
        await asyncio.shield(self._setup)

    def _known_unreachable(self) -> StoreUnavailable | None:
        """The driver's verdict, when its monitors already found every server unreachable.

        Without this, each call would wait out server selection (1.5 s by default) to
        learn what the monitors know: a database that refuses connections is reported
        at once, as unavailable, not after a wait that looks like a timeout.
        """
        if self._client is None:
            return None
        servers = self._client.topology_description.server_descriptions().values()
        errors = [server.error for server in servers]
        if not errors or any(error is None for error in errors):
            return None  # not checked yet, or some server answers: the driver decides
        return StoreUnavailable(f"no MongoDB server is reachable: {errors[0]}")

    def _keep_looking(self) -> None:
        """Keep one server selection under way while calls fail fast.

        The driver re-checks an unreachable server only every heartbeat (10 s) unless an
        operation is waiting for it, when it checks every half second: a selection in
        the background notices a database that is back as soon as it answers.
        """
        if self._looking is None or self._looking.done():
            self._looking = asyncio.ensure_future(self._look())
            self._looking.add_done_callback(_consume)

    async def _look(self) -> None:
        with contextlib.suppress(PyMongoError):
            await self._database.command("ping")

    async def _set_up_once(self) -> None:
        with _TRANSLATED:
            await self._set_up()
        self._ready = True

    async def _set_up(self) -> None:
        try:
            hello: Doc = await self._database.command("hello")
        except OperationFailure as exc:
            if exc.code != _COMMAND_NOT_FOUND:
                raise
            hello = await self._database.command("isMaster")  # before 4.2.10 / 4.4.2
        build: Doc = await self._database.command("buildInfo")
        supports = "setName" in hello or hello.get("msg") == "isdbgrid"
        if self.transactions == "on" and not supports:
            raise StoreUnavailable(
                "transactions = 'on' but this MongoDB server is a standalone, which has no "
                "transactions; run a replica set (one node is enough) or use 'auto'"
            )
        self.transactional = supports and self.transactions != "off"
        self.server_info = {
            "version": build.get("version"),
            "replica_set": hello.get("setName"),
            "transactions": self.transactional,
        }
        # MongoDB before 4.4 cannot create a collection inside a transaction.
        for suffix in ("assignments", "changes", "counters"):
            try:
                await self._database.create_collection(
                    f"{self.collection_prefix}{suffix}", check_exists=False
                )
            except OperationFailure as exc:
                if exc.code != _NAMESPACE_EXISTS:
                    raise
        await self.assignments.create_index(
            [("type", ASCENDING), ("id", ASCENDING), ("feature", ASCENDING)],
            name=ASSIGNMENTS_INDEX,
            unique=True,
        )
        await self.assignments.create_index(
            [("feature", ASCENDING), ("type", ASCENDING), ("id", ASCENDING)],
            name=BY_FEATURE_INDEX,
        )
        # The counter exists before any write, so the write path only ever $inc's an
        # existing document (concurrent upserting find_one_and_update calls on a missing
        # document are where servers, the embedded test server included, differ most).
        if await self.counters.find_one({"_id": COUNTER_ID}) is None:
            last = await self.changes.find_one({}, sort=[("_id", -1)], projection={"_id": 1})
            start = int(last["_id"]) if last else 0
            with contextlib.suppress(DuplicateKeyError):  # another instance was first
                await self.counters.update_one(
                    {"_id": COUNTER_ID}, {"$setOnInsert": {"seq": start}}, upsert=True
                )
        log.info(
            "mongodb store ready",
            extra={
                "fields": {
                    "database": self.database,
                    "prefix": self.collection_prefix,
                    "driver": self.driver,
                    **self.server_info,
                }
            },
        )

    async def ping(self) -> None:
        await self._ensure_ready()
        with _TRANSLATED:
            await self._database.command("ping")

    # -- reads ------------------------------------------------------------------------

    async def has(self, resource: Resource, feature: str) -> bool:
        await self._ensure_ready()
        with _TRANSLATED:
            found = await self.assignments.find_one(
                {"type": resource.type, "id": resource.id, "feature": feature},
                projection={"_id": 1},
            )
        return found is not None

    async def _find_all(self, queries: list[Doc]) -> list[Doc]:
        """Run the queries of one bulk read (almost always one), together, one batch each."""

        async def run(query: Doc) -> list[Doc]:
            cursor = self.assignments.find(
                query, projection={"_id": 0, "type": 1, "id": 1, "feature": 1}, batch_size=100_000
            )
            return await cursor.to_list(None)

        with _TRANSLATED:
            if len(queries) == 1:
                return await run(queries[0])
            results = await asyncio.gather(*(run(query) for query in queries))
        return [doc for docs in results for doc in docs]

    async def features_of_many(self, resources: Sequence[Resource]) -> list[list[str]]:
        await self._ensure_ready()
        ids_by_type: dict[str, dict[str, None]] = {}
        for resource in resources:
            ids_by_type.setdefault(resource.type, {})[resource.id] = None
        docs = await self._find_all(
            _queries([({"type": type_}, "id", list(ids)) for type_, ids in ids_by_type.items()])
        )
        found: dict[tuple[str, str], list[str]] = {}
        for doc in docs:
            found.setdefault((doc["type"], doc["id"]), []).append(doc["feature"])
        return [sorted(found.get((r.type, r.id), ())) for r in resources]

    async def check_many(self, items: Sequence[tuple[Resource, str]]) -> list[bool]:
        await self._ensure_ready()
        # Group the questions the way that needs fewer branches: one resource asked
        # about many features, or many resources asked about one feature.
        by_feature: dict[tuple[str, str], dict[str, None]] = {}
        by_resource: dict[tuple[str, str], dict[str, None]] = {}
        for resource, feature in items:
            by_feature.setdefault((resource.type, feature), {})[resource.id] = None
            by_resource.setdefault((resource.type, resource.id), {})[feature] = None
        if len(by_resource) < len(by_feature):
            branches = [
                ({"type": type_, "id": id_}, "feature", list(features))
                for (type_, id_), features in by_resource.items()
            ]
        else:
            branches = [
                ({"type": type_, "feature": feature}, "id", list(ids))
                for (type_, feature), ids in by_feature.items()
            ]
        docs = await self._find_all(_queries(branches))
        present = {(doc["type"], doc["id"], doc["feature"]) for doc in docs}
        return [(r.type, r.id, feature) in present for r, feature in items]

    async def resources_with(
        self, feature: str, *, type: str | None, after: Resource | None, limit: int
    ) -> list[Resource]:
        await self._ensure_ready()
        # Each query is one range of the (feature, type, id) index, read in index order.
        queries: list[Doc] = []
        if after is None:
            queries.append(
                {"feature": feature} if type is None else {"feature": feature, "type": type}
            )
        elif type is None:
            queries.append({"feature": feature, "type": after.type, "id": {"$gt": after.id}})
            queries.append({"feature": feature, "type": {"$gt": after.type}})
        elif type == after.type:
            queries.append({"feature": feature, "type": type, "id": {"$gt": after.id}})
        elif type > after.type:
            queries.append({"feature": feature, "type": type})
        found: list[Resource] = []
        with _TRANSLATED:
            for query in queries:
                if len(found) >= limit:
                    break
                cursor = self.assignments.find(
                    query,
                    projection={"_id": 0, "type": 1, "id": 1},
                    sort=[("type", ASCENDING), ("id", ASCENDING)],
                    limit=limit - len(found),
                )
                found += [Resource(doc["type"], doc["id"]) for doc in await cursor.to_list(None)]
        return found

    async def changes_since(self, revision: int, *, limit: int) -> list[ChangeEvent]:
        await self._ensure_ready()
        with _TRANSLATED:
            cursor = self.changes.find(
                {"_id": {"$gt": revision}}, sort=[("_id", ASCENDING)], limit=limit
            )
            docs = await cursor.to_list(None)
        if docs and int(docs[0]["_id"]) > revision + 1:
            # A hole at the start: trimmed by retention, or (without transactions) a
            # revision still being written or given up. The counter says which.
            with _TRANSLATED:
                counter = await self.counters.find_one({"_id": COUNTER_ID})
            trimmed = int((counter or {}).get("trimmed", 0))
            if revision < trimmed:
                raise ChangesTrimmed(revision, int(docs[0]["_id"]))
        events: list[ChangeEvent] = []
        expected = revision + 1
        now = datetime.now(UTC)
        for doc in docs:
            rev, at = int(doc["_id"]), _aware(doc["at"])
            if rev != expected and not self.transactional and at > now - self.gap_grace:
                # Revision `expected` was handed out but its event is not written yet:
                # stop here, so a follower does not move past an event still on its way.
                break
            events.append(
                ChangeEvent(
                    rev,
                    doc["op"],
                    Resource(doc["type"], doc["id"]),
                    doc["feature"],
                    at,
                    doc.get("actor"),
                )
            )
            expected = rev + 1
        return events

    async def revision(self) -> int:
        await self._ensure_ready()
        return await self._current_revision()

    # -- snapshots and feed -------------------------------------------------------------

    async def snapshot_page(self, after: Assignment | None, *, limit: int) -> SnapshotPage:
        await self._ensure_ready()
        # The revision first: every change it counts is applied already (a transaction
        # commits both together; without transactions the assignment is written first).
        revision = await self._current_revision()
        start = after or Assignment("", "", "")
        # Everything after `start` in (type, id, feature) order, as three ranges of the
        # unique index, read in index order.
        queries: list[Doc] = [
            {"type": start.type, "id": start.id, "feature": {"$gt": start.feature}},
            {"type": start.type, "id": {"$gt": start.id}},
            {"type": {"$gt": start.type}},
        ]
        found: list[Assignment] = []
        with _TRANSLATED:
            for query in queries:
                if len(found) >= limit:
                    break
                cursor = self.assignments.find(
                    query,
                    projection={"_id": 0, "type": 1, "id": 1, "feature": 1},
                    sort=[("type", ASCENDING), ("id", ASCENDING), ("feature", ASCENDING)],
                    limit=limit - len(found),
                )
                found += [
                    Assignment(doc["type"], doc["id"], doc["feature"])
                    for doc in await cursor.to_list(None)
                ]
        return SnapshotPage(revision, found)

    async def trim_changes(self, through: int) -> int:
        await self._ensure_ready()
        latest = await self._current_revision()
        through = min(through, latest - 1)
        if through <= 0:
            return 0
        with _TRANSLATED:
            # Recorded first: a reader that finds the hole then knows it is a trim.
            await self.counters.update_one({"_id": COUNTER_ID}, {"$max": {"trimmed": through}})
            deleted = await self.changes.delete_many({"_id": {"$lte": through}})
        return int(deleted.deleted_count)

    async def _current_revision(self, session: AsyncClientSession | None = None) -> int:
        with _TRANSLATED:
            counter = await self.counters.find_one({"_id": COUNTER_ID}, session=session)
        if counter is None:
            raise StoreUnavailable(
                f"the revision counter {self.collection_prefix}counters/{COUNTER_ID} is missing"
            )
        return int(counter["seq"])

    # -- writes -----------------------------------------------------------------------

    async def add(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self._write("add", resource, feature, actor)

    async def remove(self, resource: Resource, feature: str, *, actor: str | None) -> WriteResult:
        return await self._write("remove", resource, feature, actor)

    async def _write(
        self, op: ChangeOp, resource: Resource, feature: str, actor: str | None
    ) -> WriteResult:
        await self._ensure_ready()
        async with self._write_lock:
            if self.transactional:
                return await self._write_in_transaction(op, resource, feature, actor)
            return await self._write_in_steps(op, resource, feature, actor)

    async def _apply(
        self,
        op: ChangeOp,
        resource: Resource,
        feature: str,
        at: datetime,
        actor: str | None,
        session: AsyncClientSession | None,
    ) -> bool:
        """Add or remove the assignment; whether that changed anything."""
        key = {"type": resource.type, "id": resource.id, "feature": feature}
        if op == "add":
            result = await self.assignments.update_one(
                key, {"$setOnInsert": {"at": at, "actor": actor}}, upsert=True, session=session
            )
            return result.upserted_id is not None
        deleted = await self.assignments.delete_one(key, session=session)
        return deleted.deleted_count == 1

    async def _next_revision(self, session: AsyncClientSession | None) -> int:
        counter = await self.counters.find_one_and_update(
            {"_id": COUNTER_ID},
            {"$inc": {"seq": 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if counter is None:
            # Deleted behind our back: set up again (rebuilt from the log) next time.
            self._ready = False
            raise StoreUnavailable("the revision counter disappeared; it is recreated on retry")
        return int(counter["seq"])

    async def _log(
        self,
        revision: int,
        op: ChangeOp,
        resource: Resource,
        feature: str,
        at: datetime,
        actor: str | None,
        session: AsyncClientSession | None,
    ) -> None:
        await self.changes.insert_one(
            {
                "_id": revision,
                "op": op,
                "type": resource.type,
                "id": resource.id,
                "feature": feature,
                "at": at,
                "actor": actor,
            },
            session=session,
        )

    async def _start_session(self) -> AsyncClientSession:
        if self.driver == "motor":
            return cast(AsyncClientSession, await self._client.start_session())
        return cast(AsyncClientSession, self._client.start_session())

    async def _start_transaction(self, session: AsyncClientSession) -> None:
        # PyMongo's async session starts a transaction with a coroutine, Motor's without.
        if self.driver == "motor":
            cast(Any, session).start_transaction()
        else:
            await session.start_transaction()

    async def _write_in_transaction(
        self, op: ChangeOp, resource: Resource, feature: str, actor: str | None
    ) -> WriteResult:
        give_up = time.monotonic() + _CONFLICT_BUDGET_SECONDS
        for attempt in _attempts():
            at = datetime.now(UTC)
            with _TRANSLATED:
                session = await self._start_session()
            try:
                await self._start_transaction(session)
                if not await self._apply(op, resource, feature, at, actor, session):
                    await session.abort_transaction()
                    return WriteResult(False, await self._current_revision())
                revision = await self._next_revision(session)
                await self._log(revision, op, resource, feature, at, actor, session)
                await session.commit_transaction()
                return WriteResult(True, revision)
            except PyMongoError as exc:
                # A lost connection is retried once (a pooled connection may predate a
                # server restart); after that the server is down, not busy.
                lost = isinstance(exc, ConnectionFailure) and attempt > 1
                if lost or not _is_transient(exc):
                    raise translate_error(exc) from exc
                if time.monotonic() >= give_up:
                    raise StoreConflict(
                        f"{op} kept conflicting with concurrent writes ({attempt} attempts)"
                    ) from exc
            finally:
                await _end(session)
            log.debug("%s conflicted with a concurrent write (attempt %d); retrying", op, attempt)
            # Jittered exponential backoff so two instances do not conflict in lockstep.
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_in_steps(
        self, op: ChangeOp, resource: Resource, feature: str, actor: str | None
    ) -> WriteResult:
        at = datetime.now(UTC)
        with _TRANSLATED:
            try:
                changed = await self._apply(op, resource, feature, at, actor, None)
            except DuplicateKeyError:
                changed = False  # a concurrent upsert of the same assignment won
            if not changed:
                return WriteResult(False, await self._current_revision())
            revision = await self._next_revision(None)
            await self._log(revision, op, resource, feature, at, actor, None)
        return WriteResult(True, revision)


def _queries(branches: list[tuple[Doc, str, list[str]]]) -> list[Doc]:
    """One query (an ``$or`` of branches if more than one) for ``{fixed..., field: $in values}``.

    Split into several queries only when the values add up to more than one query
    should carry (see ``_IDS_PER_QUERY``).
    """
    queries: list[Doc] = []
    current: list[Doc] = []
    size = 0
    for fixed, field, values in branches:
        for start in range(0, len(values), _IDS_PER_QUERY):
            chunk = values[start : start + _IDS_PER_QUERY]
            if current and size + len(chunk) > _IDS_PER_QUERY:
                queries.append(_or(current))
                current, size = [], 0
            current.append({**fixed, field: chunk[0] if len(chunk) == 1 else {"$in": chunk}})
            size += len(chunk)
    if current:
        queries.append(_or(current))
    return queries


def _or(branches: list[Doc]) -> Doc:
    return branches[0] if len(branches) == 1 else {"$or": branches}


def _attempts() -> Iterator[int]:
    attempt = 0
    while True:
        attempt += 1
        yield attempt


async def _end(session: AsyncClientSession) -> None:
    """End a session (aborting its transaction if one is open), best effort and briefly:
    a transaction left behind is aborted by the server when its lifetime runs out."""
    try:
        async with asyncio.timeout(0.5):
            await session.end_session()
    except (PyMongoError, TimeoutError) as exc:
        log.debug("could not end a MongoDB session: %r", exc)


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve a set-up failure nobody awaited (every caller may have timed out)."""
    if not future.cancelled():
        future.exception()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# -- plugin ---------------------------------------------------------------------------


def build_store(options: StoreOptions, builder: StoreBuilder) -> Store:
    """The ``mongodb`` store from its options (registered by ``mongodb_plugin``)."""
    url = options.get_str("url", DEFAULT_URL) or DEFAULT_URL
    driver = options.get_str("driver", "pymongo") or "pymongo"
    if driver not in ("pymongo", "motor"):
        raise ConfigError(f"{options.where}: driver must be 'pymongo' or 'motor', got {driver!r}")
    if driver == "motor" and importlib.util.find_spec("motor") is None:
        raise ConfigError(
            f"{options.where}: driver = 'motor' needs the motor package: "
            "pip install motor (or the motor extra of features-gql)"
        )
    transactions = options.get_str("transactions", "auto") or "auto"
    if transactions not in ("auto", "on", "off"):
        raise ConfigError(
            f"{options.where}: transactions must be 'auto', 'on' or 'off', got {transactions!r}"
        )
    in_url = uri_option_names(url)

    def timeout(option: str, default: int) -> int | None:
        # An explicit option wins; a timeout written in the URI wins over our default.
        if options.raw(option) is not None:
            return options.get_int(option, default, minimum=1)
        return None if _URI_OPTIONS[option] in in_url else default

    return MongoDBStore(
        url,
        database=options.get_str("database"),
        collection_prefix=options.get_str("collection_prefix", DEFAULT_PREFIX) or "",
        driver=cast(Driver, driver),
        transactions=cast(TransactionMode, transactions),
        server_selection_timeout_ms=timeout(
            "server_selection_timeout_ms", DEFAULT_SERVER_SELECTION_TIMEOUT_MS
        ),
        connect_timeout_ms=timeout("connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS),
        socket_timeout_ms=timeout("socket_timeout_ms", DEFAULT_SOCKET_TIMEOUT_MS),
        gap_grace_seconds=options.get_float(
            "gap_grace_seconds", DEFAULT_GAP_GRACE_SECONDS, minimum=0
        ),
    )
