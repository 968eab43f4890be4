"""The control panel at ``/ui``: static files that talk to the public GraphQL API.

The panel's files hold no data, so they are served without a token; everything the panel
shows comes from ``/graphql`` with the token the person pasted, under the same scopes,
limits and logs as any script. The files are read once, when the application is built,
and answered from memory: a request can only ever name one of them, never a path.

Every answer carries a strict Content-Security-Policy: scripts, styles, images and
connections only from the service itself, nothing inline, no frames, and Trusted Types
required, so the panel cannot be made to run a script it did not ship.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

from features_gql.http.responses import error_response

#: Where the panel's files are, inside the installed package.
STATIC_PACKAGE = "features_gql.ui"
STATIC_FOLDER = "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

#: Headers of every answer under the panel's path.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

#: Media types of the panel's files; anything else is not served.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Traversable]:
    found: dict[str, Traversable] = {}
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            found.update(_walk(entry, f"{name}/"))
        else:
            found[name] = entry
    return found


def load_static_files(folder: Traversable | None = None) -> dict[str, StaticFile]:
    """The panel's files by their path under ``/ui/``, read into memory."""
    root = folder or resources.files(STATIC_PACKAGE).joinpath(STATIC_FOLDER)
    files: dict[str, StaticFile] = {}
    for name, entry in _walk(root).items():
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        content_type = MEDIA_TYPES.get(suffix) or mimetypes.types_map.get(suffix)
        if suffix not in MEDIA_TYPES or content_type is None:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[name] = StaticFile(body, content_type, etag)
    return files


def static_answer(request: web.Request, found: StaticFile, headers: dict[str, str]) -> web.Response:
    """``found`` with ``headers`` and its ETag, or a 304 when the client holds it already."""
    headers = {**headers, "ETag": found.etag}
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})


#: The page says whether a request without a token may read, so that the panel asks the
#: API anonymously only when that can work (a refused request is a console error).
ANONYMOUS_META = b'<meta name="anonymous-access" content="none">'


def with_anonymous_access(files: dict[str, StaticFile], readable: bool) -> dict[str, StaticFile]:
    """``files`` with the page's ``anonymous-access`` set to ``read`` or ``none``."""
    page = files.get("index.html")
    if page is None or not readable:
        return files
    body = page.body.replace(ANONYMOUS_META, ANONYMOUS_META.replace(b"none", b"read"))
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return {**files, "index.html": StaticFile(body, page.content_type, etag)}


class ControlPanel:
    """Answers ``GET {path}/`` (the page) and ``GET {path}/{file}`` from memory."""

    def __init__(self, files: dict[str, StaticFile], path: str) -> None:
        if "index.html" not in files:
            raise RuntimeError("the control panel's index.html is missing from the package")
        self.files = files
        self.path = path

    async def redirect(self, request: web.Request) -> web.Response:
        # The page's files are named relative to it, so it must be served at "/ui/".
        return web.Response(status=308, headers={"Location": f"{self.path}/", **SECURITY_HEADERS})

    async def page(self, request: web.Request) -> web.Response:
        return self._answer(request, self.files["index.html"])

    async def file(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            return error_response(
                404, f"Not found: {request.path}", "NOT_FOUND", headers=dict(SECURITY_HEADERS)
            )
        return self._answer(request, found)

    def _answer(self, request: web.Request, found: StaticFile) -> web.Response:
        # Revalidated on every load, so a new version of the service is picked up at once;
        # an unchanged file costs a 304.
        return static_answer(request, found, {**SECURITY_HEADERS, "Cache-Control": "no-cache"})


def static_method_not_allowed(
    message: str, security: dict[str, str]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The 405 for any other method than GET and HEAD on routes of static files, with the
    ``security`` headers of the files themselves."""
    headers = {"Allow": "GET, HEAD", **security}

    async def method_not_allowed(request: web.Request) -> web.Response:
        return error_response(405, message, "METHOD_NOT_ALLOWED", headers=headers)

    return method_not_allowed


_method_not_allowed = static_method_not_allowed(
    "The control panel accepts GET and HEAD only.", SECURITY_HEADERS
)


def mount_ui(
    app: web.Application, *, path: str = "/ui", anonymous_reads: bool = False
) -> list[web.AbstractResource | None]:
    """Serve the control panel at ``path`` in ``app``; its GraphQL endpoint must be
    ``/graphql`` beside it (the page calls ``../graphql``). ``anonymous_reads``: whether
    requests without a token may read (with no tokens configured, on loopback, they may).

    Returns the resources added: files that hold no data (the panel reads it over
    GraphQL, with the user's token), served to anyone."""
    panel = ControlPanel(with_anonymous_access(load_static_files(), anonymous_reads), path)
    app.router.add_get(path, panel.redirect)
    app.router.add_get(f"{path}/", panel.page)
    app.router.add_get(f"{path}/{{name:.+}}", panel.file)
    return [
        app.router.add_route("*", route, _method_not_allowed).resource
        for route in (path, f"{path}/", f"{path}/{{name:.+}}")
    ]
