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
    on the write path. ``{_id: "layout", version}``: the layout version (2).
``<prefix>features``, ``<prefix>resources``, ``<prefix>resource_types`` (layout 2)
    The catalog, ``{_id: name, count, defined, description, owner, kind, expires_at,
    created_at, updated_at, archived_at, search_text}``, one document per feature that is
    defined or assigned (indexes ``kind_name`` and ``expires``); ``{type, id, count}``
    per resource with a feature (unique index ``type_id``, which also pages listings);
    ``{_id: type, count}`` per type. Every write moves the counts in its transaction.
    ``changes`` has an index per history filter: ``(type, id, _id)``, ``(feature,
    _id)`` and ``(actor, _id)``. A store of the first layout is upgraded at set-up: the
    counts are computed from the assignments once.

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

Bulk writes (``add_many``, ``remove_many``, ``set_features``) and definitions are one
transaction each: MongoDB has no statement spanning collections, so a transaction of a
few commands (each carrying every item) is its one unit. Without transactions they
are applied item by item, each as a single write is.

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
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast
from urllib.parse import unquote

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne, uri_parser
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
    AssignmentOp,
    BulkResult,
    ChangeEvent,
    ChangeOp,
    DefinitionChange,
    DefinitionResult,
    FeatureDefinition,
    FeatureFilter,
    FeatureInfo,
    FeatureKind,
    FeatureSpec,
    HistoryQuery,
    Resource,
    ResourceTypeCount,
    SetResult,
    SnapshotPage,
    WriteResult,
)
from features_gql.errors import (
    ConfigError,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from features_gql.stores import Store, StoreBuilder, StoreOptions, check_not_trimmed, redact_url
from features_gql.stores.network import (
    STOP_SECONDS,
    OneAtATime,
    PushedChanges,
    PushingStore,
    SetUpOnce,
    retry_conflicts,
)

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
LAYOUT_ID = "layout"
#: The layout this code writes; a store of layout 1 (no version document) is upgraded.
LAYOUT_VERSION = 2
#: Milliseconds the server holds a change stream's getMore open with nothing new.
WATCH_AWAIT_MS = 5000
#: Servers without change streams (a standalone mongod) answer with these codes:
#: 40573 "only supported on replica sets", 136 "not enabled", 40324 unknown stage.
_NO_CHANGE_STREAMS = frozenset({40573, 136, 40324})
#: The change operations that change the catalog.
_CATALOG_OPS = frozenset({"define", "archive"})
T = TypeVar("T")

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


class _Collection:
    """A collection of the store, ``<collection_prefix><suffix>`` in its database."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def __get__(self, store: MongoDBStore, owner: object = None) -> AsyncCollection[Doc]:
        # Motor's collections have the same coroutine methods as PyMongo's async ones.
        return store._database[f"{store.collection_prefix}{self.suffix}"]


class MongoDBStore(PushingStore):
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
        self._setup = SetUpOnce(self._set_up_once)
        self._looking = OneAtATime(self._look)
        self._write_lock = asyncio.Lock()
        #: Decided at set-up: whether writes run in multi-document transactions.
        self.transactional = False
        #: What the server said about itself at set-up (version, replica set).
        self.server_info: dict[str, Any] = {}
        self.pushed = PushedChanges(
            self._follow_changes,
            name="features-gql-mongodb-watch",
            what="watching the change log for pushed changes",
            logger=log,
        )

    # -- connection and set-up --------------------------------------------------------

    assignments = _Collection("assignments")
    changes = _Collection("changes")
    counters = _Collection("counters")
    features = _Collection("features")
    resources = _Collection("resources")
    type_counts = _Collection("resource_types")

    def _make_client(self) -> Any:
        try:
            if self.driver == "motor":
                from motor.motor_asyncio import AsyncIOMotorClient

                return AsyncIOMotorClient(self.url, **self._client_options)
            from pymongo import AsyncMongoClient

            return AsyncMongoClient(self.url, **self._client_options)
        except ConfigurationError as exc:
            raise ConfigError(f"invalid MongoDB configuration: {exc}") from exc

    @property
    def _database(self) -> AsyncDatabase[Doc]:
        if self._db is None:
            raise StoreUnavailable("the mongodb store is not open")
        return self._db

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
        await self.pushed.stop()
        client, self._client, self._db = self._client, None, None
        self._setup.cancel()
        self._looking.cancel()
        if client is None or client is self._given_client:
            return
        if self.driver == "motor":
            client.close()
        else:
            await client.close()

    async def _ensure_ready(self) -> None:
        """Set up indexes and the counter once, on the first call that reaches the server
        (:class:`SetUpOnce`: while MongoDB is down, concurrent callers fail together
        instead of queueing for a server selection timeout each).

        While the driver's monitors find every server unreachable, calls fail at once,
        and one server selection at a time keeps going in the background: the driver
        re-checks an unreachable server only every heartbeat (10 s) unless an operation
        is waiting for it, when it checks every half second, so a database that is back
        is noticed as soon as it answers.
        """
        unreachable = self._known_unreachable()
        if unreachable is not None:
            self._looking.start()
            raise unreachable
        await self._setup()

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

    async def _look(self) -> None:
        with contextlib.suppress(PyMongoError):
            await self._database.command("ping")

    async def _set_up_once(self) -> None:
        with _TRANSLATED:
            await self._set_up()

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
        suffixes = ("assignments", "changes", "counters", "features", "resources", "resource_types")
        for suffix in suffixes:
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
        await self._set_up_catalog()
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
        docs = await self._in_order(queries, ("type", "id"), limit)
        return [Resource(doc["type"], doc["id"]) for doc in docs]

    async def _in_order(self, queries: list[Doc], fields: Sequence[str], limit: int) -> list[Doc]:
        """Up to ``limit`` assignments (``fields`` of each), ordered by ``fields``, from
        ``queries``: ranges of an index on them, in order, read one after another."""
        found: list[Doc] = []
        with _TRANSLATED:
            for query in queries:
                if len(found) >= limit:
                    break
                cursor = self.assignments.find(
                    query,
                    projection={"_id": 0, **dict.fromkeys(fields, 1)},
                    sort=[(field, ASCENDING) for field in fields],
                    limit=limit - len(found),
                )
                found += await cursor.to_list(None)
        return found

    # -- pushed changes ----------------------------------------------------------------

    async def _follow_changes(
        self, opened: Callable[[int], None], changed: Callable[[int, bool], None]
    ) -> None:
        """Tell ``changed`` of every change logged, by any process, through a change
        stream on the change log (see :class:`PushedChanges`). A server without change
        streams (a standalone ``mongod``) leaves the readers polling."""
        try:
            await self._ensure_ready()
            started = self.changes.watch(
                [
                    {"$match": {"operationType": "insert"}},
                    {"$project": {"fullDocument._id": 1, "fullDocument.op": 1}},
                ],
                max_await_time_ms=WATCH_AWAIT_MS,
            )
            # PyMongo's async client opens it with an await; Motor's at once.
            stream = await started if inspect.isawaitable(started) else started
            try:
                opened(await self._current_revision())
                async for event in stream:
                    logged = event.get("fullDocument") or {}
                    revision = logged.get("_id")
                    if isinstance(revision, int):
                        changed(revision, logged.get("op") in _CATALOG_OPS)
                raise StoreUnavailable("the change stream ended")
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_SECONDS):
                        await stream.close()
        except OperationFailure as exc:
            if exc.code not in _NO_CHANGE_STREAMS:
                raise
            log.info(
                "this MongoDB server has no change streams (%s): readers of the change log poll it",
                exc.code,
            )

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
            check_not_trimmed(revision, int(docs[0]["_id"]), trimmed_through=trimmed)
        events: list[ChangeEvent] = []
        expected = revision + 1
        now = datetime.now(UTC)
        for doc in docs:
            rev, at = int(doc["_id"]), _aware(doc["at"])
            if rev != expected and not self.transactional and at > now - self.gap_grace:
                # Revision `expected` was handed out but its event is not written yet:
                # stop here, so a follower does not move past an event still on its way.
                break
            events.append(_event(doc))
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
        docs = await self._in_order(queries, ("type", "id", "feature"), limit)
        found = [Assignment(doc["type"], doc["id"], doc["feature"]) for doc in docs]
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
        self, op: AssignmentOp, resource: Resource, feature: str, actor: str | None
    ) -> WriteResult:
        async def body(session: AsyncClientSession | None) -> tuple[WriteResult, bool]:
            if session is None:
                return await self._write_in_steps(op, resource, feature, actor), True
            at = datetime.now(UTC)
            if not await self._apply(op, resource, feature, at, actor, session):
                return WriteResult(False, await self._current_revision(session)), False
            await self._count(op, resource, feature, session)
            revision = await self._next_revision(session)
            await self._log(revision, op, resource, feature, at, actor, session)
            return WriteResult(True, revision), True

        return await self._locked(op, body)

    async def _apply(
        self,
        op: AssignmentOp,
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

    async def _next_revision(self, session: AsyncClientSession | None, count: int = 1) -> int:
        counter = await self.counters.find_one_and_update(
            {"_id": COUNTER_ID},
            {"$inc": {"seq": count}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if counter is None:
            # Deleted behind our back: set up again (rebuilt from the log) next time.
            self._setup.again()
            raise StoreUnavailable("the revision counter disappeared; it is recreated on retry")
        return int(counter["seq"])

    async def _log(
        self,
        revision: int,
        op: ChangeOp,
        resource: Resource | None,
        feature: str,
        at: datetime,
        actor: str | None,
        session: AsyncClientSession | None,
    ) -> None:
        await self.changes.insert_one(
            _change_doc(revision, op, resource, feature, at, actor), session=session
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

    async def _write_in_steps(
        self, op: AssignmentOp, resource: Resource, feature: str, actor: str | None
    ) -> WriteResult:
        at = datetime.now(UTC)
        with _TRANSLATED:
            try:
                changed = await self._apply(op, resource, feature, at, actor, None)
            except DuplicateKeyError:
                changed = False  # a concurrent upsert of the same assignment won
            if not changed:
                return WriteResult(False, await self._current_revision())
            await self._count(op, resource, feature, None)
            revision = await self._next_revision(None)
            await self._log(revision, op, resource, feature, at, actor, None)
        return WriteResult(True, revision)

    # -- catalog, listings, history and bulk ------------------------------------------

    supports_catalog = True

    async def _set_up_catalog(self) -> None:
        await self.features.create_index(
            [("kind", ASCENDING), ("_id", ASCENDING)], name="kind_name"
        )
        await self.features.create_index([("expires_at", ASCENDING)], name="expires")
        await self.resources.create_index(
            [("type", ASCENDING), ("id", ASCENDING)], name="type_id", unique=True
        )
        for name, keys in (
            ("by_resource", [("type", ASCENDING), ("id", ASCENDING), ("_id", ASCENDING)]),
            ("by_feature", [("feature", ASCENDING), ("_id", ASCENDING)]),
            ("by_actor", [("actor", ASCENDING), ("_id", ASCENDING)]),
        ):
            await self.changes.create_index(keys, name=name)
        layout = await self.counters.find_one({"_id": LAYOUT_ID})
        version = 1 if layout is None else int(layout["version"])
        if version > LAYOUT_VERSION:
            raise StoreUnavailable(
                f"this database was written by a newer features-gql (layout {version}, this "
                f"one knows {LAYOUT_VERSION}): upgrade features-gql"
            )
        if version < LAYOUT_VERSION:
            await self._count_everything()
            await self.counters.update_one(
                {"_id": LAYOUT_ID}, {"$set": {"version": LAYOUT_VERSION}}, upsert=True
            )

    async def _count_everything(self) -> None:
        """Set every count from the assignments (upgrading a layout 1 store). Setting, not
        adding: instances upgrading together write the same numbers."""
        by_feature = await _aggregate(
            self.assignments, [{"$group": {"_id": "$feature", "count": {"$sum": 1}}}]
        )
        async for doc in by_feature:
            await self.features.update_one(
                {"_id": doc["_id"]}, {"$set": {"count": doc["count"]}}, upsert=True
            )
        per_type: dict[str, int] = {}
        by_resource = await _aggregate(
            self.assignments,
            [{"$group": {"_id": {"type": "$type", "id": "$id"}, "count": {"$sum": 1}}}],
        )
        batch: list[UpdateOne] = []
        async for doc in by_resource:
            key = {"type": doc["_id"]["type"], "id": doc["_id"]["id"]}
            per_type[key["type"]] = per_type.get(key["type"], 0) + 1
            batch.append(UpdateOne(key, {"$set": {"count": doc["count"]}}, upsert=True))
            if len(batch) >= 1000:
                await self.resources.bulk_write(batch, ordered=False)
                batch = []
        if batch:
            await self.resources.bulk_write(batch, ordered=False)
        for type_, count in per_type.items():
            await self.type_counts.update_one(
                {"_id": type_}, {"$set": {"count": count}}, upsert=True
            )

    async def _count(
        self, op: AssignmentOp, resource: Resource, feature: str, session: AsyncClientSession | None
    ) -> None:
        """Move the counts for one change that took effect."""
        await self._count_many(
            {feature: 1 if op == "add" else -1},
            {(resource.type, resource.id): 1 if op == "add" else -1},
            session,
        )

    async def _count_many(
        self,
        features: Mapping[str, int],
        resources: Mapping[tuple[str, str], int],
        session: AsyncClientSession | None,
    ) -> None:
        """Move the counts of features and resources by these amounts (and of types by the
        resources that got their first feature, or lost their last)."""
        if not features:
            return
        # A feature's document stays while it is defined, whatever its count.
        await _move_counts(self.features, features, session, {"defined": {"$ne": True}})
        keys = list(resources)
        result = await self.resources.bulk_write(
            [
                UpdateOne({"type": t, "id": i}, {"$inc": {"count": resources[(t, i)]}}, upsert=True)
                for t, i in keys
            ],
            ordered=True,
            session=session,
        )
        types: dict[str, int] = {}
        for index in result.upserted_ids or {}:  # resources that had no feature before
            types[keys[index][0]] = types.get(keys[index][0], 0) + 1
        emptied = [{"type": t, "id": i} for (t, i), n in resources.items() if n < 0]
        if emptied:
            query = {"$or": emptied, "count": {"$lte": 0}}
            async for doc in self.resources.find(query, projection={"type": 1}, session=session):
                types[doc["type"]] = types.get(doc["type"], 0) - 1
            await self.resources.delete_many(query, session=session)
        if types:
            await _move_counts(self.type_counts, types, session)

    async def _transaction(
        self, op: str, body: Callable[[AsyncClientSession], Awaitable[tuple[T, bool]]]
    ) -> T:
        """Run ``body`` in a transaction, committed when it says so, retried on conflicts.

        The counter document is written by every changing transaction, so two of them
        always conflict: MongoDB aborts one with ``TransientTransactionError``, retried
        (:func:`retry_conflicts`). A lost connection is retried once (a pooled
        connection may predate a server restart); after that the server is down, not busy.
        """

        async def attempt() -> T:
            with _TRANSLATED:
                session = await self._start_session()
            try:
                await self._start_transaction(session)
                value, commit = await body(session)
                if commit:
                    await session.commit_transaction()
                else:
                    await session.abort_transaction()
                return value
            finally:
                await _end(session)

        def conflict(exc: Exception, attempts: int) -> str | None:
            if not isinstance(exc, PyMongoError):
                return None
            lost = isinstance(exc, ConnectionFailure) and attempts > 1
            if lost or not (_is_transient(exc) or _duplicate_in_bulk(exc)):
                return None
            return type(exc).__name__

        with _TRANSLATED:
            return await retry_conflicts(
                op, attempt, conflict=conflict, budget=_CONFLICT_BUDGET_SECONDS, logger=log
            )

    async def _locked(
        self, op: str, body: Callable[[AsyncClientSession | None], Awaitable[tuple[T, bool]]]
    ) -> T:
        """``body`` in a transaction, or (no transactions) as it goes, under the write lock."""
        await self._ensure_ready()
        async with self._write_lock:
            if self.transactional:
                return await self._transaction(op, body)
            with _TRANSLATED:
                value, _ = await body(None)
            return value

    async def define(self, spec: FeatureSpec, *, actor: str | None) -> DefinitionResult:
        return await self._definition_write(DefinitionChange.define(spec), actor)

    async def archive(self, name: str, *, actor: str | None) -> DefinitionResult:
        return await self._definition_write(DefinitionChange.archive(name), actor)

    async def _definition_write(
        self, write: DefinitionChange, actor: str | None
    ) -> DefinitionResult:
        name = write.name

        async def body(session: AsyncClientSession | None) -> tuple[DefinitionResult, bool]:
            doc = await self.features.find_one({"_id": name}, session=session)
            current = FeatureInfo(name) if doc is None else _info(doc)
            now = _millis(datetime.now(UTC))
            wanted = write.change(current.definition, now)
            if wanted is None:
                return DefinitionResult(
                    False, await self._current_revision(session), current
                ), False
            await self.features.update_one(
                {"_id": name},
                {
                    "$set": {
                        "defined": True,
                        "description": wanted.description,
                        "owner": wanted.owner,
                        "kind": wanted.kind,
                        "expires_at": wanted.expires_at,
                        "created_at": wanted.created_at,
                        "updated_at": wanted.updated_at,
                        "archived_at": wanted.archived_at,
                        "search_text": f"{name}\n{(wanted.description or '').lower()}",
                    },
                    "$setOnInsert": {"count": 0},
                },
                upsert=True,
                session=session,
            )
            revision = await self._next_revision(session)
            await self._log(revision, write.op, None, name, now, actor, session)
            return DefinitionResult(
                True, revision, FeatureInfo(name, current.resource_count, wanted)
            ), True

        return await self._locked(write.op, body)

    async def feature_infos(self, names: Sequence[str]) -> list[FeatureInfo]:
        await self._ensure_ready()
        with _TRANSLATED:
            docs = await self.features.find({"_id": {"$in": list(dict.fromkeys(names))}}).to_list(
                None
            )
        found = {doc["_id"]: _info(doc) for doc in docs}
        return [found.get(name) or FeatureInfo(name) for name in names]

    async def list_features(
        self, filter: FeatureFilter, *, after: str | None, limit: int
    ) -> list[FeatureInfo]:
        await self._ensure_ready()
        conditions: list[Doc] = [
            {"_id": {"$gt": after or ""}},
            # Only documents of defined or assigned features (a write without transactions
            # that stopped half-way may leave an empty one).
            {"$or": [{"count": {"$gt": 0}}, {"defined": True}]},
        ]
        if filter.kind is not None:
            conditions.append({"kind": filter.kind})
        if filter.defined is not None:
            conditions.append({"defined": True} if filter.defined else {"defined": {"$ne": True}})
        if filter.archived is not None:
            conditions.append({"archived_at": {"$ne": None} if filter.archived else None})
        if filter.expired is True:
            conditions.append({"expires_at": {"$lte": filter.now}})
        elif filter.expired is False:
            conditions.append({"$or": [{"expires_at": None}, {"expires_at": {"$gt": filter.now}}]})
        if filter.search is not None:
            text = {"$regex": re.escape(filter.search)}
            conditions.append({"$or": [{"search_text": text}, {"_id": text}]})
        with _TRANSLATED:
            cursor = self.features.find(
                {"$and": conditions}, sort=[("_id", ASCENDING)], limit=limit
            )
            docs = await cursor.to_list(None)
        return [_info(doc) for doc in docs]

    async def resource_types(self, *, after: str | None, limit: int) -> list[ResourceTypeCount]:
        await self._ensure_ready()
        with _TRANSLATED:
            cursor = self.type_counts.find(
                {"_id": {"$gt": after or ""}, "count": {"$gt": 0}},
                sort=[("_id", ASCENDING)],
                limit=limit,
            )
            docs = await cursor.to_list(None)
        return [ResourceTypeCount(doc["_id"], int(doc["count"])) for doc in docs]

    async def resource_count(self, type: str) -> int:
        await self._ensure_ready()
        with _TRANSLATED:
            doc = await self.type_counts.find_one({"_id": type})
        return 0 if doc is None else max(int(doc["count"]), 0)

    async def list_resources(self, type: str, *, after: str | None, limit: int) -> list[Resource]:
        await self._ensure_ready()
        with _TRANSLATED:
            cursor = self.resources.find(
                {"type": type, "id": {"$gt": after or ""}, "count": {"$gt": 0}},
                projection={"_id": 0, "id": 1},
                sort=[("type", ASCENDING), ("id", ASCENDING)],
                limit=limit,
            )
            docs = await cursor.to_list(None)
        return [Resource(type, doc["id"]) for doc in docs]

    async def history(
        self, query: HistoryQuery, *, before: int | None, limit: int
    ) -> list[ChangeEvent]:
        await self._ensure_ready()
        where: Doc = {}
        if query.resource is not None:
            where["type"], where["id"] = query.resource.type, query.resource.id
        if query.feature is not None:
            where["feature"] = query.feature
        if query.actor is not None:
            where["actor"] = query.actor
        if before is not None:
            where["_id"] = {"$lt": before}
        with _TRANSLATED:
            cursor = self.changes.find(where, sort=[("_id", DESCENDING)], limit=limit)
            docs = await cursor.to_list(None)
        return [_event(doc) for doc in docs]

    async def _refused(
        self, features: Sequence[str], session: AsyncClientSession | None
    ) -> list[str]:
        wanted = sorted(set(features))
        live = await self.features.find(
            {"_id": {"$in": wanted}, "defined": True, "archived_at": None},
            projection={"_id": 1},
            session=session,
        ).to_list(None)
        return sorted(set(wanted) - {doc["_id"] for doc in live})

    async def _present(
        self, keys: Sequence[tuple[str, str, str]], session: AsyncClientSession | None
    ) -> set[tuple[str, str, str]]:
        by_resource: dict[tuple[str, str], list[str]] = {}
        for t, i, f in keys:
            by_resource.setdefault((t, i), []).append(f)
        branches = [({"type": t, "id": i}, "feature", fs) for (t, i), fs in by_resource.items()]
        found: set[tuple[str, str, str]] = set()
        for query in _queries(branches):
            docs = await self.assignments.find(
                query, projection={"_id": 0, "type": 1, "id": 1, "feature": 1}, session=session
            ).to_list(None)
            found.update((d["type"], d["id"], d["feature"]) for d in docs)
        return found

    async def _apply_many(
        self,
        op: AssignmentOp,
        keys: Sequence[tuple[str, str, str]],
        actor: str | None,
        session: AsyncClientSession,
    ) -> list[int]:
        """Apply distinct changes in one transaction; the revision of each that took effect
        (0 for the others), in order."""
        present = await self._present(keys, session)
        todo = [k for k in keys if (k in present) == (op == "remove")]
        if not todo:
            return [0] * len(keys)
        at = _millis(datetime.now(UTC))
        if op == "add":
            await self.assignments.insert_many(
                [{"type": t, "id": i, "feature": f, "at": at, "actor": actor} for t, i, f in todo],
                ordered=True,
                session=session,
            )
        else:
            for query in _queries([({"type": t, "id": i}, "feature", [f]) for t, i, f in todo]):
                await self.assignments.delete_many(query, session=session)
        sign = 1 if op == "add" else -1
        features: dict[str, int] = {}
        resources: dict[tuple[str, str], int] = {}
        for t, i, f in todo:
            features[f] = features.get(f, 0) + sign
            resources[(t, i)] = resources.get((t, i), 0) + sign
        await self._count_many(features, resources, session)
        last = await self._next_revision(session, len(todo))
        first = last - len(todo) + 1
        await self.changes.insert_many(
            [
                _change_doc(first + k, op, Resource(t, i), f, at, actor)
                for k, (t, i, f) in enumerate(todo)
            ],
            ordered=True,
            session=session,
        )
        revisions = dict(zip(todo, range(first, last + 1), strict=True))
        return [revisions.get(k, 0) for k in keys]

    async def add_many(
        self,
        items: Sequence[tuple[Resource, str]],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> BulkResult:
        return await self._bulk("add", items, actor, require_defined)

    async def remove_many(
        self, items: Sequence[tuple[Resource, str]], *, actor: str | None
    ) -> BulkResult:
        return await self._bulk("remove", items, actor, False)

    async def _bulk(
        self,
        op: AssignmentOp,
        items: Sequence[tuple[Resource, str]],
        actor: str | None,
        require_defined: bool,
    ) -> BulkResult:
        first: dict[tuple[str, str, str], int] = {}
        for n, (resource, feature) in enumerate(items):
            first.setdefault((resource.type, resource.id, feature), n)
        keys = list(first)

        async def body(session: AsyncClientSession | None) -> tuple[BulkResult, bool]:
            revisions: list[int | None] = [None] * len(items)
            if require_defined:
                refused = await self._refused([f for _, _, f in keys], session)
                if refused:
                    return BulkResult(
                        revisions, await self._current_revision(session), refused
                    ), False
            if session is None:  # no transactions: one write at a time
                for key, n in first.items():
                    result = await self._write_in_steps(op, Resource(key[0], key[1]), key[2], actor)
                    revisions[n] = result.revision if result.changed else None
                return BulkResult(revisions, await self._current_revision()), True
            applied = await self._apply_many(op, keys, actor, session)
            for key, revision in zip(keys, applied, strict=True):
                revisions[first[key]] = revision or None
            return BulkResult(revisions, await self._current_revision(session)), any(applied)

        return await self._locked(f"{op}_many", body)

    async def set_features(
        self,
        resource: Resource,
        features: Sequence[str],
        *,
        actor: str | None,
        require_defined: bool = False,
    ) -> SetResult:
        wanted = sorted(set(features))

        async def body(session: AsyncClientSession | None) -> tuple[SetResult, bool]:
            if require_defined:
                refused = await self._refused(wanted, session)
                if refused:
                    return SetResult([], [], await self._current_revision(session), refused), False
            docs = await self.assignments.find(
                {"type": resource.type, "id": resource.id},
                projection={"feature": 1},
                session=session,
            ).to_list(None)
            current = {doc["feature"] for doc in docs}
            removed = sorted(current.difference(wanted))
            added = [f for f in wanted if f not in current]
            changes = [("remove", f) for f in removed] + [("add", f) for f in added]
            if session is None:
                for op, feature in changes:
                    await self._write_in_steps(cast(AssignmentOp, op), resource, feature, actor)
            else:
                for op, group in (("remove", removed), ("add", added)):
                    if group:
                        keys = [(resource.type, resource.id, f) for f in group]
                        await self._apply_many(cast(AssignmentOp, op), keys, actor, session)
            revision = await self._current_revision(session)
            return SetResult(removed, added, revision), bool(changes)

        return await self._locked("set_features", body)


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


async def _move_counts(
    collection: AsyncCollection[Doc],
    amounts: Mapping[str, int],
    session: AsyncClientSession | None,
    keep: Doc | None = None,
) -> None:
    """Move the ``count`` of each document (by ``_id``) by its amount, creating it if
    missing, and delete those left at zero or below, unless ``keep`` matches them."""
    await collection.bulk_write(
        [UpdateOne({"_id": k}, {"$inc": {"count": n}}, upsert=True) for k, n in amounts.items()],
        ordered=True,
        session=session,
    )
    shrunk = [key for key, n in amounts.items() if n < 0]
    if shrunk:
        query: Doc = {"_id": {"$in": shrunk}, "count": {"$lte": 0}, **(keep or {})}
        await collection.delete_many(query, session=session)


async def _end(session: AsyncClientSession) -> None:
    """End a session (aborting its transaction if one is open), best effort and briefly:
    a transaction left behind is aborted by the server when its lifetime runs out."""
    try:
        async with asyncio.timeout(0.5):
            await session.end_session()
    except (PyMongoError, TimeoutError) as exc:
        log.debug("could not end a MongoDB session: %r", exc)


async def _aggregate(collection: AsyncCollection[Doc], pipeline: list[Doc]) -> Any:
    """A cursor over ``pipeline``: PyMongo's async API returns it from a coroutine, Motor
    directly."""
    cursor: Any = collection.aggregate(pipeline)
    return await cursor if inspect.isawaitable(cursor) else cursor


def _millis(at: datetime) -> datetime:
    """``at`` to the millisecond: what MongoDB keeps, so what is returned is what is read."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _change_doc(
    revision: int,
    op: str,
    resource: Resource | None,
    feature: str,
    at: datetime,
    actor: str | None,
) -> Doc:
    return {
        "_id": revision,
        "op": op,
        "type": None if resource is None else resource.type,
        "id": None if resource is None else resource.id,
        "feature": feature,
        "at": at,
        "actor": actor,
    }


def _event(doc: Doc) -> ChangeEvent:
    type_ = doc.get("type")
    return ChangeEvent(
        int(doc["_id"]),
        doc["op"],
        None if type_ is None else Resource(type_, doc["id"]),
        doc["feature"],
        _aware(doc["at"]),
        doc.get("actor"),
    )


def _maybe_aware(at: datetime | None) -> datetime | None:
    return None if at is None else _aware(at)


def _info(doc: Doc) -> FeatureInfo:
    definition = None
    if doc.get("defined"):
        definition = FeatureDefinition(
            created_at=_aware(doc["created_at"]),
            updated_at=_aware(doc["updated_at"]),
            description=doc.get("description"),
            owner=doc.get("owner"),
            kind=cast(FeatureKind | None, doc.get("kind")),
            expires_at=_maybe_aware(doc.get("expires_at")),
            archived_at=_maybe_aware(doc.get("archived_at")),
        )
    return FeatureInfo(doc["_id"], max(int(doc.get("count", 0)), 0), definition)


def _duplicate_in_bulk(exc: PyMongoError) -> bool:
    """An insert_many that met a document a concurrent transaction inserted: a conflict."""
    details = getattr(exc, "details", None) or {}
    errors = details.get("writeErrors", []) if isinstance(details, dict) else []
    return bool(errors) and all(error.get("code") == 11000 for error in errors)


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
