"""Import and export: the whole state of a store as JSON Lines.

One JSON object per line, of two kinds:

    {"definition": {"name": "speedups", "description": "...", "owner": "ci",
                    "kind": "ops", "expiresAt": "2030-01-31T00:00:00Z", "archived": false}}
    {"type": "pipeline", "id": "db8e9a0d-...", "feature": "speedups"}

An export writes every definition (archived ones too), ordered by name, then every
assignment, ordered by (type, id, feature). An import reads either kind in any order
and applies them through :class:`~features_gql.api.FeaturesAPI`, so every rule and the
strict mode apply, and every change is logged under its own revision (followers and
replicas see an import like any other writes). Assignments go in batches, one store
call each; a definition line first applies the assignments before it, so order is kept.
Importing is idempotent: what is already there changes nothing and logs nothing.
Times (createdAt, updatedAt, archivedAt) are those of the import.

A bad line stops the import: every line before it is applied, nothing from it on, and
:class:`ImportStopped` says which line, why, and how far the import got.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import orjson

from features_gql.api import MAX_BATCH, MAX_PAGE_SIZE, CheckedItems, FeaturesAPI
from features_gql.domain import FEATURE_KINDS, KEEP, FeatureDefinition, Resource, validate_expiry
from features_gql.errors import InvalidInput

DEFAULT_BATCH = MAX_BATCH
_ASSIGNMENT_KEYS = frozenset({"type", "id", "feature"})
_DEFINITION_KEYS = frozenset({"name", "description", "owner", "kind", "expiresAt", "archived"})


class BadLine(Exception):
    """A line that is not one of the two kinds, or breaks a rule."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class ImportProgress:
    """How far an import got. ``applied_through`` is the last line whose effect is in the
    store (every line up to it is)."""

    lines: int = 0
    applied_through: int = 0
    assignments: int = 0
    definitions: int = 0
    changed: int = 0
    bytes_read: int = 0


class ImportStopped(Exception):
    """A bad line stopped the import; everything before it is applied."""

    def __init__(
        self, line: int, reason: str, progress: ImportProgress, *, applying: bool = False
    ) -> None:
        self.line = line
        self.reason = reason
        self.progress = progress
        #: Whether applying the line failed (strict mode), rather than reading it.
        self.applying = applying
        through = progress.applied_through
        before = (
            "nothing was imported"
            if through == 0
            else "line 1 was imported"
            if through == 1
            else f"lines 1-{through} were imported"
        )
        super().__init__(
            f"line {line}: {reason}; the import stopped there: {before} "
            f"({progress.assignments:,} assignments, {progress.definitions:,} definitions, "
            f"{progress.changed:,} changes), nothing from line {line} on"
        )


@dataclass(frozen=True, slots=True)
class _Definition:
    name: str
    fields: dict[str, Any]
    archived: bool


def _parse_time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadLine("definition.expiresAt must be an ISO 8601 time or null")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadLine(f"definition.expiresAt is not an ISO 8601 time: {value!r:.60}") from None
    try:
        # The rule FeaturesAPI.define keeps: a time zone, a range, milliseconds.
        return validate_expiry(parsed, "definition.expiresAt")
    except InvalidInput as exc:
        raise BadLine(exc.message) from None


def _other(value: object) -> _Definition:
    """A line that is not an assignment: a definition, or a bad line."""
    if not isinstance(value, dict):
        raise BadLine('expected an object: {"type", "id", "feature"} or {"definition"}')
    if value.keys() == _ASSIGNMENT_KEYS:
        raise BadLine("type, id and feature must be strings")
    if value.keys() == {"definition"}:
        return _definition(value["definition"])
    raise BadLine(
        f"unknown line: keys {', '.join(sorted(map(str, value)))}; expected "
        '{"type", "id", "feature"} or {"definition": {...}}'
    )


def _definition(value: object) -> _Definition:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise BadLine('a definition line is {"definition": {"name": ..., ...}}')
    unknown = sorted(set(value) - _DEFINITION_KEYS)
    if unknown:
        raise BadLine(
            f"definition has unknown key(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_DEFINITION_KEYS))}"
        )
    fields: dict[str, Any] = {}
    for key in ("description", "owner"):
        if key in value:
            if value[key] is not None and not isinstance(value[key], str):
                raise BadLine(f"definition.{key} must be a string or null")
            fields[key] = value[key]
    if "kind" in value:
        kind = value["kind"]
        if kind is not None:
            if not isinstance(kind, str) or kind.lower() not in FEATURE_KINDS:
                raise BadLine(f"definition.kind must be one of {', '.join(FEATURE_KINDS)}")
            kind = kind.lower()
        fields["kind"] = kind
    if "expiresAt" in value:
        fields["expires_at"] = _parse_time(value["expiresAt"])
    archived = value.get("archived", False)
    if not isinstance(archived, bool):
        raise BadLine("definition.archived must be true or false")
    return _Definition(value["name"], fields, archived)


class Importer:
    """Reads JSON Lines into the store behind ``api`` (see the module docstring)."""

    def __init__(
        self,
        api: FeaturesAPI,
        *,
        actor: str = "import",
        batch: int = DEFAULT_BATCH,
        on_progress: Callable[[ImportProgress], None] | None = None,
    ) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be between 1 and {MAX_BATCH}")
        self.api = api
        self.actor = actor
        self.batch_size = batch
        self.on_progress = on_progress
        self.progress = ImportProgress()
        self._resource: Resource | None = None
        self._items: list[tuple[Resource, str]] = []
        self._lines: list[int] = []
        self._in_flight: asyncio.Task[None] | None = None

    async def run(self, lines: Iterable[bytes]) -> ImportProgress:
        """Import every line; raises :class:`ImportStopped` at the first bad one."""
        source = iter(lines)
        number = 0  # lines read before the chunk
        try:
            while chunk := list(itertools.islice(source, self.batch_size)):
                self.progress.bytes_read += sum(map(len, chunk))
                start = 0
                while start < len(chunk):
                    start, definition = self._read(chunk, start, number + 1)
                    self.progress.lines = number + start
                    if definition is not None:
                        await self._flush()
                        await self._wait()
                        await self._define(definition, number + start)
                    if len(self._items) >= self.batch_size:
                        await self._flush()
                number += len(chunk)
                self._report()
            await self._flush()
            await self._wait()
        except ImportStopped as stopped:
            raise await self._stop(stopped) from None
        self.progress.applied_through = self.progress.lines = number
        self._report()
        return self.progress

    async def _stop(self, stopped: ImportStopped) -> ImportStopped:
        """Apply what came before a bad line, and say how far the import got."""
        if stopped.applying:
            self._items, self._lines = [], []  # read after the line that failed
        else:
            try:
                await self._flush()
                await self._wait()
            except ImportStopped as earlier:  # a line before the bad one failed first
                stopped = earlier
                self._items, self._lines = [], []
        self.progress.applied_through = stopped.line - 1
        return ImportStopped(stopped.line, stopped.reason, self.progress)

    def _read(self, chunk: list[bytes], start: int, first: int) -> tuple[int, _Definition | None]:
        """Queue the assignment lines of ``chunk`` from ``start`` on, up to the first
        definition line or the batch size: (where reading stopped, the definition read).
        ``first`` is the number of the chunk's first line."""
        # The loop every line goes through: locals, and each resource checked once for
        # as many lines as it appears on in a row.
        items, lines = self._items, self._lines
        loads, full = orjson.loads, self.batch_size
        resource = self._resource
        position = start
        end = len(chunk)
        try:
            while position < end and len(items) < full:
                raw = chunk[position]
                position += 1
                try:
                    value = loads(raw)
                except orjson.JSONDecodeError as exc:
                    if not raw.strip():
                        continue  # a blank line
                    raise BadLine(f"not JSON ({exc})") from None
                if type(value) is dict and len(value) == 3:
                    type_, id_, feature = value.get("type"), value.get("id"), value.get("feature")
                    if type(type_) is str and type(id_) is str and type(feature) is str:
                        # FeaturesAPI checks the names, once per batch; one Resource for
                        # the lines of one resource in a row makes that check cheap.
                        if resource is None or resource.id != id_ or resource.type != type_:
                            resource = Resource(type_, id_)
                        items.append((resource, feature))
                        lines.append(first + position - 1)
                        continue
                return position, _other(value)
        except BadLine as exc:
            raise ImportStopped(first + position - 1, exc.message, self.progress) from None
        finally:
            self._resource = resource
        return position, None

    async def _define(self, definition: _Definition, line: int) -> None:
        try:
            if definition.archived and await self._already_archived(definition):
                self.progress.definitions += 1
                self.progress.applied_through = line
                return
            result = await self.api.define(
                definition.name,
                description=definition.fields.get("description", KEEP),
                owner=definition.fields.get("owner", KEEP),
                kind=definition.fields.get("kind", KEEP),
                expires_at=definition.fields.get("expires_at", KEEP),
                actor=self.actor,
            )
            changed = int(result.changed)
            if definition.archived:
                changed += (await self.api.archive(definition.name, actor=self.actor)).changed
        except InvalidInput as exc:
            reason = f"definition.{exc.field}: {exc.message}"
            raise ImportStopped(line, reason, self.progress, applying=True) from None
        self.progress.definitions += 1
        self.progress.changed += changed
        self.progress.applied_through = line

    async def _already_archived(self, definition: _Definition) -> bool:
        """Whether an archived definition is in the store as it is in the line (defining it
        again would bring it back, to be archived again: two changes for nothing)."""
        (info,) = await self.api.feature_infos([definition.name])
        current = info.definition
        if current is None or current.archived_at is None:
            return False
        return all(getattr(current, key) == value for key, value in definition.fields.items())

    async def _flush(self) -> None:
        """Send the queued assignments. They are checked while the previous batch is still
        being written, then sent once it is: one batch is written while the next is read."""
        if not self._items:
            await self._wait()
            return
        items, lines = self._items, self._lines
        self._items, self._lines = [], []
        try:
            checked = self.api.check_items(items)
        except InvalidInput as exc:
            await self._wait()  # the batch before this one comes first, and may fail first
            await self._refused(exc, items, lines)
        await self._wait()
        self._in_flight = asyncio.ensure_future(self._apply(checked, lines))
        # Let it run up to the store's own thread, so this batch is written while the
        # next one is read.
        await asyncio.sleep(0)

    async def _apply(self, items: CheckedItems, lines: list[int]) -> None:
        try:
            result = await self.api.add_many(items, actor=self.actor)
        except InvalidInput as exc:
            await self._refused(exc, items, lines)
        self.progress.assignments += len(items)
        self.progress.changed += sum(r is not None for r in result.revisions)
        self.progress.applied_through = lines[-1]

    async def _refused(
        self, exc: InvalidInput, items: list[tuple[Resource, str]], lines: list[int]
    ) -> NoReturn:
        """A name broke a rule, or strict mode refused a feature: the whole batch was
        refused. Apply the lines before that one, and stop there."""
        if not exc.field.startswith("items["):
            raise exc
        index = int(exc.field[len("items[") : exc.field.index("]")])
        if index:
            await self._apply(self.api.check_items(items[:index]), lines[:index])
        reason = exc.message.replace(f"items[{index}].resource.", "").replace(
            f"items[{index}].", ""
        )
        raise ImportStopped(lines[index], reason, self.progress, applying=True) from None

    async def _wait(self) -> None:
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


# -- export ------------------------------------------------------------------------------


def _definition_line(name: str, definition: FeatureDefinition) -> bytes:
    expires = definition.expires_at
    body = {
        "name": name,
        "description": definition.description,
        "owner": definition.owner,
        "kind": definition.kind,
        "expiresAt": None if expires is None else _iso(expires),
        "archived": definition.archived_at is not None,
    }
    return orjson.dumps({"definition": body}) + b"\n"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def export_lines(api: FeaturesAPI, *, page: int = MAX_PAGE_SIZE) -> AsyncIterator[bytes]:
    """Every definition, then every assignment, as JSON Lines (see the module docstring)."""
    after: str | None = None
    while True:
        features = await api.list_features(archived=None, defined=True, first=page, after=after)
        for info in features.features:
            if info.definition is not None:
                yield _definition_line(info.name, info.definition)
        if not features.has_next_page:
            break
        after = features.end_cursor
    type_after: str | None = None
    while True:
        types = await api.resource_types(first=page, after=type_after)
        for type_ in types:
            cursor: str | None = None
            while True:
                resources = await api.list_resources(type_.name, first=page, after=cursor)
                features_of = await api.features_of_many(resources.resources)
                chunk = [
                    orjson.dumps({"type": r.type, "id": r.id, "feature": f}) + b"\n"
                    for r, features in zip(resources.resources, features_of, strict=True)
                    for f in features
                ]
                yield b"".join(chunk)
                if not resources.has_next_page:
                    break
                cursor = resources.end_cursor
        if len(types) < page:
            break
        type_after = types[-1].name


class ProgressBar:
    """A one-line progress bar for a terminal (``\\r``-redrawn, at most 10 times a second)."""

    def __init__(self, write: Callable[[str], object], total_bytes: int | None) -> None:
        self.write = write
        self.total = total_bytes
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, progress: ImportProgress, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._drawn < 0.1:
            return
        self._drawn = now
        rate = progress.assignments / max(now - self.started, 1e-9)
        if self.total:
            done = min(progress.bytes_read / self.total, 1.0)
            filled = int(done * 30)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done:4.0%} "
        else:
            bar = ""
        self.write(
            f"\r{bar}{progress.lines:,} lines, {progress.assignments:,} assignments "
            f"({rate:,.0f}/s), {progress.changed:,} changes" + ("\n" if final else "")
        )
