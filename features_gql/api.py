"""FeaturesAPI: the port every driving adapter talks to. It knows no GraphQL and no database."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from features_gql.domain import (
    Assignment,
    ChangeEvent,
    Resource,
    ResourcePage,
    SnapshotPage,
    WriteResult,
    validate_feature,
    validate_id,
    validate_slug,
)
from features_gql.errors import InvalidInput, StoreError, StoreTimeout
from features_gql.events import OperationEvent
from features_gql.request_context import request_id
from features_gql.stores.base import Store, injected_delay

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
WRITES = frozenset({"add", "remove"})


def encode_cursor(resource: Resource) -> str:
    raw = json.dumps(
        [resource.type, resource.id], ensure_ascii=False, separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "after") -> Resource:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(part, str) for part in value)
        ):
            return Resource(value[0], value[1])
    except (ValueError, binascii.Error, UnicodeError):
        pass
    raise InvalidInput(
        field, "cursor", f"{field} must be a cursor returned by this API (got {cursor!r:.80})"
    )


def encode_snapshot_cursor(assignment: Assignment) -> str:
    raw = json.dumps(
        [assignment.type, assignment.id, assignment.feature],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_snapshot_cursor(cursor: str, field: str = "after") -> Assignment:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(part, str) for part in value)
        ):
            return Assignment(value[0], value[1], value[2])
    except (ValueError, binascii.Error, UnicodeError):
        pass
    raise InvalidInput(
        field, "cursor", f"{field} must be a cursor returned by this API (got {cursor!r:.80})"
    )


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
    ) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.store = store
        self.deadline = deadline
        self._on_event = on_event
        #: Called with the new revision after each write through this API that changed
        #: something: the in-process change feed wakes on it instead of waiting to poll.
        self.change_listeners: list[Callable[[int], None]] = []

    async def _call(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        *,
        resource: Resource | None = None,
        feature: str | None = None,
        items: int = 1,
    ) -> T:
        started = time.perf_counter()
        outcome = "ok"
        error: str | None = None
        injected = False
        try:
            if self.store.never_suspends:
                return await call()
            async with asyncio.timeout(self.deadline):
                return await call()
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
            if self._on_event is not None:
                self._on_event(
                    OperationEvent(
                        store=self.store.name,
                        op=op,
                        duration=time.perf_counter() - started,
                        outcome=outcome,
                        resource=None if resource is None else str(resource),
                        feature=feature,
                        items=items,
                        request_id=request_id.get(),
                        error=error,
                        injected=injected,
                    )
                )

    async def has(self, resource: Resource | tuple[str, str], feature: str) -> bool:
        """Does ``resource`` have ``feature``?"""
        res = _resource(resource)
        validate_feature(feature)
        return await self._call(
            "has", lambda: self.store.has(res, feature), resource=res, feature=feature
        )

    async def add(
        self, resource: Resource | tuple[str, str], feature: str, *, actor: str | None = None
    ) -> WriteResult:
        """Give ``resource`` the feature; ``changed`` is false if it already had it."""
        res = _resource(resource)
        validate_feature(feature)
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
        _check_batch(len(items), "items")
        checked: list[tuple[Resource, str]] = []
        # Types and features repeat across a batch, and share one rule: check each once.
        slugs: set[str] = set()
        for i, (resource, feature) in enumerate(items):
            type_, id_ = (
                (resource.type, resource.id) if isinstance(resource, Resource) else resource
            )
            if type_ not in slugs:
                slugs.add(validate_slug(type_, f"items[{i}].resource.type"))
            try:
                validate_id(id_)
            except InvalidInput:
                # The item's own field name is built only for the error: a thousand
                # f-strings per batch otherwise.
                validate_id(id_, f"items[{i}].resource.id")
            if feature not in slugs:
                slugs.add(validate_feature(feature, f"items[{i}].feature"))
            checked.append((Resource(type_, id_), feature))
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
        for i, id_ in enumerate(ids):
            validate_id(id_, f"ids[{i}]")
        for j, feature in enumerate(features):
            validate_feature(feature, f"features[{j}]")
        _check_batch(len(ids) * len(features), "ids")
        if not ids or not features:
            return [[] for _ in ids]
        items = [(Resource(type, id_), feature) for id_ in ids for feature in features]
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

    # -- snapshots and feed -------------------------------------------------------------

    def _changed(self, revision: int) -> None:
        for listener in self.change_listeners:
            try:
                listener(revision)
            except Exception:  # a listener must never fail a write that happened
                log.exception("a change listener raised")

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

    def has(
        self,
        resource: Resource | tuple[str, str],
        feature: str,
        *,
        field: str = "resource",
        feature_field: str = "feature",
    ) -> Awaitable[bool]:
        """Does ``resource`` have ``feature``? Validated now (a bad check fails alone, at
        once); await the answer."""
        res = _resource(resource, field)
        validate_feature(feature, feature_field)
        api = self._api
        if self.sole:
            # The executor knows this is the request's only check: nothing to wait for.
            return api._call(
                "has", lambda: api.store.has(res, feature), resource=res, feature=feature
            )
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


def _check_batch(size: int, field: str) -> None:
    if size > MAX_BATCH:
        raise InvalidInput(
            field, "batch-size", f"{field} may hold at most {MAX_BATCH} entries (got {size})"
        )
