"""Request headers a client cannot make the service trip on.

aiohttp decodes header values as UTF-8 and keeps undecodable bytes as lone surrogates
(``surrogateescape``), so any code that encodes a header again (to compare a token,
store an actor, quote it in an error) raises. The service answers such requests with a
400 that names the header instead of letting one reach code that trips on it. Control
characters never get this far: aiohttp's parser answers them with a 400 itself.
"""

from __future__ import annotations

from collections.abc import Iterable


def undecodable_header(raw_headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The name of the first header whose value is not valid UTF-8, or None."""
    for name, value in raw_headers:
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return name.decode("latin-1")
    return None
