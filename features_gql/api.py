"""FeaturesAPI: the port every driving adapter talks to. It knows no GraphQL and no database."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from time import perf_counter
from typing import TypeVar

# The cursor codec lives in features_gql.cursors; these names stay importable from here.
from features_gql.cursors import decode_cursor as decode_cursor
from features_gql.cursors import decode_key as decode_key
from features_gql.cursors import decode_snapshot_cursor as decode_snapshot_cursor
from features_gql.cursors import encode_cursor as encode_cursor
from features_gql.cursors import encode_key as encode_key
from features_gql.cursors import encode_snapshot_cursor as encode_snapshot_cursor
from features_gql.domain import (
    DESCRIPTION_MAX,
    FEATURE_KINDS,
    KEEP,
    OWNER_MAX,
    SEARCH_MAX,
    Assignment,
    BulkResult,
    ChangeEvent,
    ChangePage,
    DefinitionResult,
    FeatureFilter,
    FeatureInfo,
    FeaturePage,
    FeatureSpec,
    HistoryQuery,
    Keep,
    Resource,
    ResourcePage,
    ResourceTypeCount,
    SetResult,
    SnapshotPage,
    WriteResult,
    all_ids_valid,
    resource_of_pair,
    validate_expiry,
    validate_feature,
    validate_id,
    validate_slug,
    validate_text,
)
from features_gql.errors import InvalidInput, StoreError, StoreTimeout
from features_gql.events import OperationEvent
from features_gql.request_context import request_id, request_operations
from features_gql.stores.base import OPERATIONS, Store, injected_delay

log = logging.getLogger("features_gql.api")

T = TypeVar("T")

DEFAULT_DEADLINE = 2.0
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH = 10_000
#: Assignments in one snapshot page: the default, and the most one page may ask for.
DEFAULT_SNAPSHOT_PAGE = 1000
MAX_SNAPSHOT_PAGE = 10_000
#: Operations that change the store: a missed deadline may still have applied them.
WRITES = frozenset(op.event for op in OPERATIONS if op.writes)


def _resource(resource: Resource | tuple[str, str], field: str = "resource") -> Resource:
    if isinstance(resource, Resource):
        return Resource.of(resource.type, resource.id, field)
    type_, id_ = resource
    return Resource.of(type_, id_, field)


@dataclass(frozen=True, slots=True)
class Probe:
    """The answer of a readiness probe. ``reason`` is an outcome word, never internals."""

    store: str
    up: bool
    seconds: float
    reason: str | None = None


class FeaturesAPI:
    """Attach features to resources and ask about them.

    Every store call goes through :meth:`_call`, the one instrumentation point: it
    applies the deadline, turns a missed deadline into :class:`StoreTimeout`, times
    the call and emits an :class:`OperationEvent` to ``on_event``.
    """

    def __init__(
        self,
        store: Store,
        *,
        deadline: float = DEFAULT_DEADLINE,
        on_event: Callable[[OperationEvent], None] | None = None,
        strict: bool = False,
    ) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.store = store
        self.deadline = deadline
        self._on_event = on_event
        #: Strict mode: refuse to assign a feature that is not defined (or archived).
        self.strict = strict
        #: Called with the new revision after each write through this API that changed
        #: something: the in-process change feed wakes on it instead of waiting to poll.
        self.change_listeners: list[Callable[[int], None]] = []
        #: Called with the result of each define or archive through this API that changed
        #: something, after the change listeners: in-memory views of the catalog update at
        #: once (features_gql.catalog_view).
        self.catalog_listeners: list[Callable[[DefinitionResult], None]] = []
        #: Called with ``(revision, catalog)`` when the store pushes a notice of a change
        #: committed by any process (see :meth:`watch_store`): followers of the change log
        #: wake at once instead of at their next poll.
        self.pushed_listeners: list[Callable[[int, bool], None]] = []

    async def _call(
        self,
        op: str,
        call: Callable[..., Awaitable[T]],
        *args: object,
        resource: Resource | None = None,
        feature: str | None = None,
        items: int = 1,
    ) -> T:
        started = perf_counter()
        outcome = "ok"
        error: str | None = None
        injected = False
        try:
            # The call's arguments are passed along rather than closed over by a lambda:
            # one function call less per store call.
            if self.store.never_suspends:
                return await call(*args)
            async with asyncio.timeout(self.deadline):
                return await call(*args)
        except TimeoutError:
            # A store that delayed on purpose left its mark on this task (stores.base).
            injected = injected_delay.get()
            injected_delay.set(False)
            why = " (injected delay)" if injected else ""
            outcome, error = "timeout", f"no answer within {self.deadline:g}s{why}"
            raise StoreTimeout(
                f"the store did not answer {op} within {self.deadline:g}s{why}",
                injected=injected,
                maybe_applied=op in WRITES,
            ) from None
        except StoreError as exc:
            outcome, error, injected = exc.outcome, str(exc), exc.injected
            raise
        except Exception as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            on_event = self._on_event
            # The calls of the request being answered, for its log line (set by the HTTP
            # middleware); kept here rather than by a sink, a call less per store call.
            operations = request_operations.get()
            if on_event is not None or operations is not None:
                # Positional, and the resource written here rather than by str(): one
                # event per store call, on the hottest path.
                event = OperationEvent(
                    self.store.name,
                    op,
                    perf_counter() - started,
                    outcome,
                    None if resource is None else f"{resource.type}/{resource.id}",
                    feature,
                    items,
                    request_id.get(),
                    error,
                    injected,
                )
                if operations is not None:
                    operations.append(event)
                if on_event is not None:
                    on_event(event)

    async def has(self, resource: Resource | tuple[str, str], feature: str) -> bool:
        """Does ``resource`` have ``feature``?"""
        res = _resource(resource)
        validate_feature(feature)
        return await self._call("has", self.store.has, res, feature, resource=res, feature=feature)

    async def add(
        self, resource: Resource | tuple[str, str], feature: str, *, actor: str | None = None
    ) -> WriteResult:
        """Give ``resource`` the feature; ``changed`` is false if it already had it."""
        res = _resource(resource)
        validate_feature(feature)
        if self.strict:
            # One store call that checks the definition and adds, atomically.
            bulk = await self._bulk_add([(res, feature)], actor, fields=["feature"])
            revision = bulk.revisions[0]
            return WriteResult(revision is not None, revision or bulk.revision)
        result = await self._call(
            "add",
            lambda: self.store.add(res, feature, actor=actor),
            resource=res,
            feature=feature,
        )
        if result.changed:
            self._changed(result.revision)
        return result

    async def remove(
        self, resource: Resource | tuple[str, str], feature: str, *, actor: str | None = None
    ) -> WriteResult:
        """Take the feature away; ``changed`` is false if it did not have it."""
        res = _resource(resource)
        validate_feature(feature)
        result = await self._call(
            "remove",
            lambda: self.store.remove(res, feature, actor=actor),
            resource=res,
            feature=feature,
        )
        if result.changed:
            self._changed(result.revision)
        return result

    def batch(self) -> CheckBatch:
        """A batch of checks: every :meth:`CheckBatch.has` made before the event loop
        turns goes to the store in one ``check_many`` call (one per request)."""
        return CheckBatch(self)

    async def features_of_many(
        self, resources: Sequence[Resource | tuple[str, str]]
    ) -> list[list[str]]:
        """The features of each resource, in one store call."""
        _check_batch(len(resources), "resources")
        checked = [_resource(r, f"resources[{i}]") for i, r in enumerate(resources)]
        if not checked:
            return []
        return await self._call(
            "features_of", lambda: self.store.features_of_many(checked), items=len(checked)
        )

    async def check_many(
        self, items: Sequence[tuple[Resource | tuple[str, str], str]]
    ) -> list[bool]:
        """Answer many (resource, feature) questions in one store call, in order."""
        return await self._check_many(_items(items))

    async def check_columns(
        self, types: Sequence[str], ids: Sequence[str], features: Sequence[str]
    ) -> list[bool]:
        """:meth:`check_many` for questions given as three columns of one length: item i
        asks whether ``(types[i], ids[i])`` has ``features[i]``. The cheap form for a batch
        taken from JSON, with no tuple per item to build."""
        return await self._check_many(_columns(types, ids, features))

    async def _check_many(self, checked: list[tuple[Resource, str]]) -> list[bool]:
        if not checked:
            return []
        return await self._call(
            "check_many", lambda: self.store.check_many(checked), items=len(checked)
        )

    async def check_matrix(
        self, type: str, ids: Sequence[str], features: Sequence[str]
    ) -> list[list[bool]]:
        """For each id, whether ``(type, id)`` has each feature: one row per id, one column
        per feature, in one store call. The cheap shape for large batches."""
        validate_slug(type, "type")
        if not all_ids_valid(ids):
            for i, id_ in enumerate(ids):
                validate_id(id_, f"ids[{i}]")
        for j, feature in enumerate(features):
            validate_feature(feature, f"features[{j}]")
        _check_batch(len(ids) * len(features), "ids")
        if not ids or not features:
            return [[] for _ in ids]
        resources = [resource_of_pair((type, id_)) for id_ in ids]
        items = [(resource, feature) for resource in resources for feature in features]
        answers = await self._call(
            "check_many", lambda: self.store.check_many(items), items=len(items)
        )
        width = len(features)
        return [answers[row * width : (row + 1) * width] for row in range(len(ids))]

    async def resources_with(
        self,
        feature: str,
        *,
        type: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> ResourcePage:
        """Resources having ``feature``, ordered by (type, id), ``first`` per page."""
        validate_feature(feature)
        if type is not None:
            validate_slug(type, "type")
        limit = DEFAULT_PAGE_SIZE if first is None else first
        if not 0 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(
                "first", "range", f"first must be between 0 and {MAX_PAGE_SIZE} (got {limit})"
            )
        after_resource = None if after is None else decode_cursor(after)
        # One more than asked says whether there is a next page; for ``first: 0`` too, as
        # Relay's connection spec counts it.
        found = await self._call(
            "resources_with",
            lambda: self.store.resources_with(
                feature, type=type, after=after_resource, limit=limit + 1
            ),
            feature=feature,
        )
        page = found[:limit]
        return ResourcePage(
            resources=page,
            has_next_page=len(found) > limit,
            end_cursor=encode_cursor(page[-1]) if page else None,
        )

    async def changes_since(self, revision: int = 0, *, limit: int = 100) -> list[ChangeEvent]:
        """Change events after ``revision``, oldest first."""
        if revision < 0:
            raise InvalidInput("after", "range", f"after must be >= 0 (got {revision})")
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(
                "first", "range", f"first must be between 1 and {MAX_PAGE_SIZE} (got {limit})"
            )
        return await self._call(
            "changes_since", lambda: self.store.changes_since(revision, limit=limit)
        )

    async def revision(self) -> int:
        """The revision of the latest change."""
        return await self._call("revision", self.store.revision)

    # -- catalog, listings, history and bulk ------------------------------------------

    async def define(
        self,
        name: str,
        *,
        description: str | Keep | None = KEEP,
        owner: str | Keep | None = KEEP,
        kind: str | Keep | None = KEEP,
        expires_at: datetime | Keep | None = KEEP,
        actor: str | None = None,
    ) -> DefinitionResult:
        """Create or update a feature's definition; a field left out keeps its value,
        a field given as None is cleared. Defining an archived feature brings it back."""
        validate_feature(name, "name")
        if isinstance(description, str):
            validate_text(description, "description", DESCRIPTION_MAX, multiline=True)
        if isinstance(owner, str):
            validate_text(owner, "owner", OWNER_MAX)
        if isinstance(kind, str) and kind not in FEATURE_KINDS:
            raise InvalidInput(
                "kind", "kind", f"kind must be one of {', '.join(FEATURE_KINDS)} (got {kind!r:.40})"
            )
        if isinstance(expires_at, datetime):
            expires_at = validate_expiry(expires_at)
        spec = FeatureSpec(name, description, owner, kind, expires_at)
        result = await self._call(
            "define", lambda: self.store.define(spec, actor=actor), feature=name
        )
        if result.changed:
            self._changed(result.revision)
            self._catalog_changed(result)
        return result

    async def archive(self, name: str, *, actor: str | None = None) -> DefinitionResult:
        """Retire a feature: it stays in the catalog (listed with ``archived``), keeps its
        assignments, and strict mode refuses new ones."""
        validate_feature(name, "name")
        result = await self._call(
            "archive", lambda: self.store.archive(name, actor=actor), feature=name
        )
        if result.changed:
            self._changed(result.revision)
            self._catalog_changed(result)
        return result

    async def feature_infos(self, names: Sequence[str]) -> list[FeatureInfo]:
        """What the catalog knows of each feature, in one store call."""
        _check_batch(len(names), "names")
        for i, name in enumerate(names):
            validate_feature(name, f"names[{i}]")
        if not names:
            return []
        return await self._call(
            "feature_infos", lambda: self.store.feature_infos(names), items=len(names)
        )

    async def list_features(
        self,
        *,
        kind: str | None = None,
        search: str | None = None,
        expired: bool | None = None,
        archived: bool | None = False,
        defined: bool | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> FeaturePage:
        """Features that are defined or assigned, ordered by name; archived ones only when
        ``archived`` is True or None."""
        if kind is not None and kind not in FEATURE_KINDS:
            raise InvalidInput("kind", "kind", f"kind must be one of {', '.join(FEATURE_KINDS)}")
        if search is not None:
            validate_text(search, "search", SEARCH_MAX)
            search = search.lower() or None
        limit = _page_size(first)
        after_name = None if after is None else str(decode_key(after, "feature"))
        filter = FeatureFilter(
            datetime.now(UTC),
            kind=kind,
            search=search,
            expired=expired,
            archived=archived,
            defined=defined,
        )
        found = await self._call(
            "list_features",
            lambda: self.store.list_features(filter, after=after_name, limit=limit + 1),
        )
        page = found[:limit]
        return FeaturePage(
            page,
            has_next_page=len(found) > limit,
            end_cursor=encode_key("feature", page[-1].name) if page else None,
        )

    async def resource_types(
        self, *, first: int | None = None, after: str | None = None
    ) -> list[ResourceTypeCount]:
        """Resource types in use, ordered by name, each with its number of resources."""
        limit = MAX_PAGE_SIZE if first is None else _page_size(first)
        if after is not None:
            validate_slug(after, "after")
        if limit == 0:
            return []
        return await self._call(
            "resource_types", lambda: self.store.resource_types(after=after, limit=limit)
        )

    async def resource_count(self, type: str) -> int:
        """How many resources of ``type`` have at least one feature."""
        validate_slug(type, "type")
        return await self._call("resource_count", lambda: self.store.resource_count(type))

    async def list_resources(
        self, type: str, *, first: int | None = None, after: str | None = None
    ) -> ResourcePage:
        """Resources of ``type`` having at least one feature, ordered by id."""
        validate_slug(type, "type")
        limit = _page_size(first)
        after_id: str | None = None
        if after is not None:
            cursor = decode_cursor(after)
            if cursor.type != type:
                raise InvalidInput(
                    "after", "cursor", "after is a cursor of another type's resources"
                )
            after_id = cursor.id
        found = await self._call(
            "list_resources",
            lambda: self.store.list_resources(type, after=after_id, limit=limit + 1),
        )
        page = found[:limit]
        return ResourcePage(
            page,
            has_next_page=len(found) > limit,
            end_cursor=encode_cursor(page[-1]) if page else None,
        )

    async def history(
        self,
        *,
        resource: Resource | tuple[str, str] | None = None,
        feature: str | None = None,
        actor: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> ChangePage:
        """Changes newest first, of one resource, feature or actor (or any mix)."""
        res = None if resource is None else _resource(resource)
        if feature is not None:
            validate_feature(feature)
        if actor is not None:
            validate_text(actor, "actor", OWNER_MAX)
        limit = _page_size(first)
        before: int | None = None
        if after is not None:
            value = decode_key(after, "revision")
            if not isinstance(value, int) or value < 1:
                raise InvalidInput("after", "cursor", "after must be a cursor of this history")
            before = value
        query = HistoryQuery(res, feature, actor)
        found = await self._call(
            "history",
            lambda: self.store.history(query, before=before, limit=limit + 1),
            resource=res,
            feature=feature,
        )
        page = found[:limit]
        return ChangePage(
            page,
            has_next_page=len(found) > limit,
            end_cursor=encode_key("revision", page[-1].revision) if page else None,
        )

    def check_items(self, items: Sequence[tuple[Resource | tuple[str, str], str]]) -> CheckedItems:
        """Validate items for :meth:`add_many` or :meth:`remove_many` ahead of the call (an
        importer checks the next batch while the store writes the last one)."""
        return CheckedItems(_items(items))

    async def add_many(
        self, items: Sequence[tuple[Resource | tuple[str, str], str]], *, actor: str | None = None
    ) -> BulkResult:
        """Add every assignment in one store call; each change gets its own revision.
        In strict mode, an undefined or archived feature refuses the whole call."""
        checked = items if isinstance(items, CheckedItems) else _items(items)
        return await self._bulk_add(checked, actor)

    async def _bulk_add(
        self,
        items: list[tuple[Resource, str]],
        actor: str | None,
        fields: Sequence[str] | None = None,
    ) -> BulkResult:
        result = await self._call(
            "add_many",
            lambda: self.store.add_many(items, actor=actor, require_defined=self.strict),
            items=len(items),
        )
        if result.refused:
            refused = set(result.refused)
            at = next(i for i, (_, feature) in enumerate(items) if feature in refused)
            field = fields[at] if fields else f"items[{at}].feature"
            raise _undefined(field, items[at][1])
        if any(r is not None for r in result.revisions):
            self._changed(result.revision)
        return result

    async def remove_many(
        self, items: Sequence[tuple[Resource | tuple[str, str], str]], *, actor: str | None = None
    ) -> BulkResult:
        """Remove every assignment in one store call; each change gets its own revision."""
        checked = items if isinstance(items, CheckedItems) else _items(items)
        result = await self._call(
            "remove_many",
            lambda: self.store.remove_many(checked, actor=actor),
            items=len(checked),
        )
        if any(r is not None for r in result.revisions):
            self._changed(result.revision)
        return result

    async def set_features(
        self,
        resource: Resource | tuple[str, str],
        features: Sequence[str],
        *,
        actor: str | None = None,
    ) -> SetResult:
        """Make ``features`` the resource's features, in one store call."""
        res = _resource(resource)
        _check_batch(len(features), "features")
        for i, feature in enumerate(features):
            validate_feature(feature, f"features[{i}]")
        result = await self._call(
            "set_features",
            lambda: self.store.set_features(
                res, list(features), actor=actor, require_defined=self.strict
            ),
            resource=res,
            items=len(features),
        )
        if result.refused:
            at = next(i for i, feature in enumerate(features) if feature in result.refused)
            raise _undefined(f"features[{at}]", features[at])
        if result.removed or result.added:
            self._changed(result.revision)
        return result

    # -- snapshots and feed -------------------------------------------------------------

    def _changed(self, revision: int) -> None:
        for listener in self.change_listeners:
            try:
                listener(revision)
            except Exception:  # a listener must never fail a write that happened
                log.exception("a change listener raised")

    async def watch_store(self) -> bool:
        """Ask the store to push notices of committed changes to :attr:`pushed_listeners`
        (after ``open``); whether it can."""
        return await self.store.watch(self._pushed)

    @property
    def pushed(self) -> bool:
        """Whether the store's notices arrive now: followers may poll slowly."""
        return self.store.watching

    def _pushed(self, revision: int, catalog: bool) -> None:
        for listener in self.pushed_listeners:
            try:
                listener(revision, catalog)
            except Exception:  # one listener must not keep the notice from the others
                log.exception("a pushed-change listener raised")

    def _catalog_changed(self, result: DefinitionResult) -> None:
        for listener in self.catalog_listeners:
            try:
                listener(result)
            except Exception:  # a listener must never fail a write that happened
                log.exception("a catalog listener raised")

    async def snapshot_page(
        self, after: Assignment | None = None, *, limit: int = DEFAULT_SNAPSHOT_PAGE
    ) -> SnapshotPage:
        """A page of the snapshot of every assignment, after ``after`` (see SnapshotPage)."""
        if not 1 <= limit <= MAX_SNAPSHOT_PAGE:
            raise InvalidInput(
                "first",
                "range",
                f"first must be between 1 and {MAX_SNAPSHOT_PAGE} (got {limit})",
            )
        return await self._call(
            "snapshot_page", lambda: self.store.snapshot_page(after, limit=limit), items=limit
        )

    async def trim_changes(self, keep: int) -> int:
        """Trim the change log to its latest ``keep`` events; how many were deleted."""
        if keep < 1:
            raise InvalidInput("keep", "range", f"keep must be at least 1 (got {keep})")
        revision = await self.revision()
        if revision <= keep:
            return 0
        return await self._call("trim_changes", lambda: self.store.trim_changes(revision - keep))

    async def probe(self, within: float = 0.5) -> Probe:
        """Readiness: can the store answer within ``within`` seconds?

        Not reported as an operation event: probes arrive every second and would drown
        the request traffic in logs. Failures are logged here, once per probe.
        """
        started = time.perf_counter()
        reason: str | None = None
        try:
            async with asyncio.timeout(min(within, self.deadline)):
                await self.store.ping()
        except TimeoutError:
            reason = "timeout"
        except StoreError as exc:
            reason = exc.outcome
            log.warning("readiness probe failed: %s", exc)
        except Exception:
            reason = "error"
            log.exception("readiness probe raised an unexpected error")
        return Probe(self.store.name, reason is None, time.perf_counter() - started, reason)


class CheckBatch:
    """Flag checks gathered into one store call.

    Each check is validated when it is asked (so a bad one fails alone, naming its own
    field); the valid ones wait for the event loop to turn and then share one
    ``check_many`` call, which answers or fails for all of them together.
    """

    __slots__ = ("_api", "_pending", "_tasks", "sole")

    def __init__(self, api: FeaturesAPI) -> None:
        self._api = api
        #: Set by an executor that knows the request asks exactly one check.
        self.sole = False
        self._pending: list[tuple[tuple[Resource, str], asyncio.Future[bool]]] = []
        #: The store calls in flight, referenced so the loop cannot collect them.
        self._tasks: set[asyncio.Task[None]] = set()

    def has(self, resource: Resource | tuple[str, str], feature: str) -> Awaitable[bool]:
        """Does ``resource`` have ``feature``? Validated now (a bad check fails alone, at
        once); await the answer."""
        type_, id_ = resource
        return self.check(type_, id_, feature)

    def check(self, type: str, id: str, feature: str) -> Awaitable[bool]:
        """:meth:`has` for a resource given as its type and id (the form both executors
        hold), with no pair to build and take apart again."""
        res = Resource.of(type, id)
        validate_feature(feature)
        api = self._api
        if self.sole:
            # The executor knows this is the request's only check: nothing to wait for.
            return api._call("has", api.store.has, res, feature, resource=res, feature=feature)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush, loop, 0)
        self._pending.append(((res, feature), answer))
        return answer

    def _flush(self, loop: asyncio.AbstractEventLoop, seen: int) -> None:
        # Executors reach nested fields a turn or more after top-level ones (how many
        # depends on the graphql-core version): send the batch only once a turn of the
        # loop has added nothing to it, so every check of the request shares the call.
        if len(self._pending) != seen:
            loop.call_soon(self._flush, loop, len(self._pending))
            return
        pending, self._pending = self._pending, []
        task = loop.create_task(self._answer(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, pending: list[tuple[tuple[Resource, str], asyncio.Future[bool]]]
    ) -> None:
        items = [item for item, _ in pending]
        api = self._api
        try:
            if len(items) == 1:
                # The common case, one check per request: the store's own `has`.
                ((resource, feature),) = items
                answers = [
                    await api._call(
                        "has",
                        lambda: api.store.has(resource, feature),
                        resource=resource,
                        feature=feature,
                    )
                ]
            else:
                _check_batch(len(items), "hasFeature")
                answers = await api._call(
                    "check_many", lambda: api.store.check_many(items), items=len(items)
                )
        except Exception as exc:  # every waiting check fails with the one call
            for _, answer in pending:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_, answer), value in zip(pending, answers, strict=True):
            if not answer.done():
                answer.set_result(value)


class CheckedItems(list[tuple[Resource, str]]):
    """Items :meth:`FeaturesAPI.check_items` validated, which the bulk calls take as they
    are. Build them only with it."""


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


def _items(items: Sequence[tuple[Resource | tuple[str, str], str]]) -> list[tuple[Resource, str]]:
    """The items as (Resource, feature) pairs, each checked against the rules."""
    _check_batch(len(items), "items")
    # Taken apart in C (itemgetter, set, map): batches are where this costs.
    resources = list(map(_FIRST, items))
    if set(map(type, resources)) - {Resource}:
        resources = [r if type(r) is Resource else Resource(*r) for r in resources]
    return _columns(
        list(map(_FIRST, resources)),
        list(map(_SECOND, resources)),
        list(map(_SECOND, items)),
        resources,
    )


def _columns(
    types: Sequence[str],
    ids: Sequence[str],
    features: Sequence[str],
    resources: list[Resource] | None = None,
) -> list[tuple[Resource, str]]:
    """Items given as columns (item i is ``(types[i], ids[i])`` and ``features[i]``) as
    (Resource, feature) pairs, each checked against the rules.

    Types and features repeat across a batch: each distinct one is checked once, and the
    ids all at once. Should any break a rule, the items are checked again in order, to
    name the first that does.
    """
    _check_batch(len(types), "items")
    if not len(types) == len(ids) == len(features):
        raise ValueError("the columns of a batch of checks differ in length")
    try:
        for feature in set(features):
            validate_feature(feature)
        for type_ in set(types):
            validate_slug(type_, "type")
        if not all_ids_valid(ids):
            raise InvalidInput("id", "id", "some id breaks the id rule")
    except InvalidInput:
        _first_bad_item(types, ids, features)
    if resources is None:
        resources = list(map(resource_of_pair, zip(types, ids, strict=True)))
    return list(zip(resources, features, strict=True))


def _first_bad_item(types: Sequence[str], ids: Sequence[str], features: Sequence[str]) -> None:
    """Raise InvalidInput naming the first item that breaks a rule."""
    for i, (type_, id_, feature) in enumerate(zip(types, ids, features, strict=True)):
        validate_slug(type_, f"items[{i}].resource.type")
        validate_id(id_, f"items[{i}].resource.id")
        validate_feature(feature, f"items[{i}].feature")
    raise AssertionError("unreachable: some item broke a rule")  # pragma: no cover


def _page_size(first: int | None) -> int:
    limit = DEFAULT_PAGE_SIZE if first is None else first
    if not 0 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(
            "first", "range", f"first must be between 0 and {MAX_PAGE_SIZE} (got {limit})"
        )
    return limit


def _undefined(field: str, feature: str) -> InvalidInput:
    return InvalidInput(
        field,
        "undefined",
        f"feature {feature!r} is not defined, or is archived: strict mode assigns only "
        "defined features (defineFeature first)",
    )


def _check_batch(size: int, field: str) -> None:
    if size > MAX_BATCH:
        raise InvalidInput(
            field, "batch-size", f"{field} may hold at most {MAX_BATCH} entries (got {size})"
        )
