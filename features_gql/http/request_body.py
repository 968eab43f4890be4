"""Reading a GraphQL request from HTTP, once, for every executor.

GraphQL over HTTP: ``POST`` with an ``application/json`` body, or ``GET`` with the
``query``, ``variables`` (JSON) and ``operationName`` parameters. Anything else is a
:class:`BodyError` with the status the specification gives it. A JSON object with a key
given twice is refused: which of the two values a server takes is not defined, so two
components could read two different requests from one body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, cast

import orjson
from aiohttp import web

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class BodyError:
    status: int
    code: str
    message: str
    allow: str | None = None


class GraphQLBody(NamedTuple):
    """One GraphQL request as the client sent it (a tuple: built for every request)."""

    query: str | None
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


#: ``GraphQLBody`` from its four fields, built in C (the named tuple's own ``__new__`` is
#: a Python function).
_body = cast(
    "Callable[[tuple[Any, Any, Any, Any]], GraphQLBody]", partial(tuple.__new__, GraphQLBody)
)


def _bad(message: str) -> BodyError:
    return BodyError(400, "BAD_REQUEST", message)


class DuplicateKey(ValueError):
    pass


class TooDeep(ValueError):
    """A JSON document nested deeper than :data:`MAX_JSON_DEPTH` levels."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")


#: The deepest nesting of arrays and objects a body may have: far more than any query's
#: variables or evaluation context need, and what encoding a document again allows (orjson
#: refuses to encode deeper, which is how a deeper one is found).
MAX_JSON_DEPTH = 254


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def decode_json(raw: bytes) -> Any:
    """Decode a JSON document, refusing an object that repeats a key.

    Raises ValueError: orjson's JSONDecodeError (not JSON, or ``NaN`` and ``Infinity``,
    which JSON does not have), :class:`TooDeep`, or :class:`DuplicateKey`.

    orjson keeps the last of repeated keys without a word, so the check is done apart, in
    C as far as possible. A text that is exactly what encoding the value again gives holds
    no repeated key. Otherwise: encoded again, the decoded value holds one ``":`` per key,
    plus one per ``\":`` inside its strings. The text it came from holds the same, plus one per
    repeated key, as long as no closing quote is followed by whitespace (then each key
    would not end in ``":``) and no character is written as a ``\\u`` escape (a quote or a
    colon so written would make the counts differ the other way, and could hide a
    repeated key): equal counts prove no key was repeated. Anything else goes to the
    strict, slower decoder.
    """
    value = orjson.loads(raw)
    if type(value) is not dict and type(value) is not list:
        return value
    try:
        again = orjson.dumps(value)
    except TypeError:
        # The only way a decoded document fails to encode: nested past orjson's limit.
        raise TooDeep() from None
    if again == raw:
        # Written as orjson writes (compact, as most clients send): an encoder writes
        # each key of a dict once, so the text repeats none.
        return value
    if (
        b'" ' not in raw
        and b'"\n' not in raw
        and b'"\t' not in raw
        and b'"\r' not in raw
        and b"\\u" not in raw
        and raw.count(b'":') == again.count(b'":')
    ):
        return value
    return _STRICT.decode(raw.decode("utf-8"))


def _request_data(data: Any) -> GraphQLBody | BodyError:
    if type(data) is list:
        return _bad("Batched requests are not supported: send one operation per request.")
    if type(data) is not dict:
        return _bad("The request body must be a JSON object with a query.")
    query = data.get("query")
    variables = data.get("variables")
    name = data.get("operationName")
    extensions = data.get("extensions")
    if query is not None and type(query) is not str:
        return _bad("The GraphQL operation's `query` must be a string or null, if provided.")
    if variables is not None and type(variables) is not dict:
        return _bad("The GraphQL operation's `variables` must be an object or null, if provided.")
    if name is not None and type(name) is not str:
        return _bad("`operationName` must be a string or null, if provided.")
    if extensions is not None and type(extensions) is not dict:
        return _bad("`extensions` must be an object or null, if provided.")
    return _body((query, variables, name, extensions))


async def read_graphql_request(
    request: web.Request, method: str | None = None
) -> GraphQLBody | BodyError:
    """The GraphQL request in ``request``, or why there is none (``method``: the request's,
    when the caller has read it already)."""
    if method is None:
        method = request.method
    found = graphql_request_now(request, method)
    if found is not None:
        return found
    return _from_json(await request.read())


def graphql_request_now(request: web.Request, method: str) -> GraphQLBody | BodyError | None:
    """:func:`read_graphql_request` without waiting: None when a POST body has not all
    arrived yet. A small request usually has, before its handler runs: it is then read
    with no await at all (one coroutine less on the hottest path)."""
    if method == "GET":
        params = request.query
        variables: Any = None
        if params.get("variables"):
            try:
                variables = decode_json(params["variables"].encode("utf-8", "surrogateescape"))
            except ValueError:
                return _bad("`variables` must be a JSON object.")
        return _request_data(
            {
                "query": params.get("query"),
                "variables": variables,
                "operationName": params.get("operationName") or None,
            }
        )
    if method != "POST":
        return BodyError(
            405, "METHOD_NOT_ALLOWED", "GraphQL accepts GET and POST only.", "GET, POST"
        )
    # The header as clients send it is checked first; only variants are parsed.
    given = request.headers.get("Content-Type")
    if given != JSON and request.content_type != JSON:
        return BodyError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the request as application/json.",
        )
    raw = body_now(request)
    return None if raw is None else _from_json(raw)


def body_now(request: web.Request) -> bytes | None:
    """The request's body if it has all arrived, else None (then ``await request.read()``).

    Taken from the buffer at once, without the reads and awaits of ``request.read()``, and
    bounded as that bounds it: larger than the application's ``client_max_size`` raises
    the same 413.
    """
    payload = request.content
    if not payload.is_eof():
        return None
    raw = payload.read_nowait()
    limit = request.client_max_size
    if limit and len(raw) > limit:  # 0: no limit, as aiohttp reads it
        raise web.HTTPRequestEntityTooLarge(limit, len(raw))
    return raw


def _from_json(raw: bytes) -> GraphQLBody | BodyError:
    try:
        data = decode_json(raw)
    except DuplicateKey as exc:
        return _bad(f"The request body repeats the key {str(exc)[:64]!r} in one object.")
    except TooDeep as exc:
        return _bad(f"The request body is {exc}.")
    except ValueError:
        return _bad("Unable to parse request body as JSON.")
    return _request_data(data)
