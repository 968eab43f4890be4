"""GraphiQL, served by the service itself: nothing comes from a CDN or any other host.

The page (``features_gql/ui/graphiql/index.html``, with its start script and stylesheet) is
the project's own; GraphiQL, React and the explorer plugin are the publishers' browser
builds, which the package build fetched from npm into ``ui/graphiql/vendor/`` (see
``frontend/graphiql`` and ``build_backend/``). A browser asking the GraphQL endpoint for a
page (``GET`` with ``text/html`` and no query) gets the page; the files it names are served
beside the endpoint at ``graphiql/<digest>/...``, where the digest covers every file, so
they may be cached for a year: a new version of any file is a new address.

The page's Content-Security-Policy is the control panel's (``http/ui.py``) with what
GraphiQL's own code needs, and no more; see :data:`CONTENT_SECURITY_POLICY`.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

from features_gql.http.responses import error_response
from features_gql.http.ui import (
    SECURITY_HEADERS,
    StaticFile,
    load_static_files,
    static_answer,
    static_method_not_allowed,
)

log = logging.getLogger("features_gql.http")

PAGE_PACKAGE = "features_gql.ui"
PAGE_FOLDER = "graphiql"
PAGE = "index.html"
#: Where the page names its files; replaced by the digest's path when it is served.
ASSETS_MARKER = b"{{assets}}"
#: Files the page cannot work without; the vendor folder holds them once the build fetched
#: them from npm.
REQUIRED = (
    "start.js",
    "vendor/react.production.min.js",
    "vendor/react-dom.production.min.js",
    "vendor/graphiql.min.js",
    "vendor/graphiql.min.css",
    "vendor/plugin-explorer.umd.js",
)

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        # GraphiQL's editors and tooltips position themselves with inline style attributes,
        # and its stylesheet embeds fonts and icons as data: URIs. Styles cannot run code.
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)

SECURITY = {**SECURITY_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
#: The files' addresses change with their content, so a browser may keep them.
IMMUTABLE = "public, max-age=31536000, immutable"
#: The page says whether a request without a token may read (as the control panel's).
ANONYMOUS_META = b'<meta name="anonymous-access" content="none">'


def _digest(files: dict[str, StaticFile]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].body + b"\0")
    return digest.hexdigest()[:16]


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def asset_route(path: str) -> str:
    """Where the files of the page served at the GraphQL ``path`` are: ``graphiql`` beside
    it, which is where the page's relative addresses point (``/graphql`` → ``/graphiql``,
    ``/api/graphql`` → ``/api/graphiql``)."""
    return posixpath.join(posixpath.dirname(path), "graphiql")


class GraphiQLPage:
    """The page and its files, from memory: a request can only name one of them.

    When the browser files are not installed (features-gql run from a source tree that no
    build has prepared), the page is a 503 that says so, and the API is served all the
    same: GraphiQL is a tool for people, not something the service depends on.
    """

    def __init__(self, files: dict[str, StaticFile], *, anonymous_reads: bool, route: str) -> None:
        missing = [name for name in (PAGE, *REQUIRED) if name not in files]
        self.unavailable = (
            "GraphiQL's browser files are not installed (missing "
            f"{', '.join(missing)}). Install features-gql from a wheel, or from source with "
            "Node.js and npm present (the build runs `npm ci`); or switch GraphiQL off "
            "(--no-graphiql, FEATURES_GQL_GRAPHIQL=false)."
            if missing
            else None
        )
        if self.unavailable is not None:
            files = {PAGE: StaticFile(b"", "text/html", '""')}
        self.assets = {name: found for name, found in files.items() if name != PAGE}
        self.digest = _digest(files)
        self.route = route
        body = files[PAGE].body.replace(ASSETS_MARKER, f"graphiql/{self.digest}".encode())
        if anonymous_reads:
            body = body.replace(ANONYMOUS_META, ANONYMOUS_META.replace(b"none", b"read"))
        self.page_file = StaticFile(body, files[PAGE].content_type, _etag(body))

    async def page(self, request: web.Request) -> web.Response:
        if self.unavailable is not None:
            return error_response(503, self.unavailable, headers=dict(SECURITY))
        # Revalidated on every load, so a new version's page (naming new files) is seen.
        return _answer(request, self.page_file, "no-cache")

    async def asset(self, request: web.Request) -> web.Response:
        found = None
        if request.match_info["digest"] == self.digest:
            found = self.assets.get(request.match_info["name"])
        if found is None:
            return error_response(
                404, f"Not found: {request.path}", "NOT_FOUND", headers=dict(SECURITY)
            )
        return _answer(request, found, IMMUTABLE)

    def mount(self, app: web.Application) -> list[web.AbstractResource | None]:
        """Serve the page's files in ``app`` (the page itself is the GraphQL view's);
        returns the resources added, which hold no data and need no token."""
        if self.unavailable is not None:
            log.error("GraphiQL is not served: %s", self.unavailable)
            return []
        route = f"{self.route}/{{digest}}/{{name:.+}}"
        app.router.add_get(route, self.asset)
        return [app.router.add_route("*", route, _method_not_allowed).resource]


def _answer(request: web.Request, found: StaticFile, cache: str) -> web.Response:
    return static_answer(request, found, {**SECURITY, "Cache-Control": cache})


_method_not_allowed = static_method_not_allowed(
    "GraphiQL's files accept GET and HEAD only.", SECURITY
)


def load_page_files(folder: Traversable | None = None) -> dict[str, StaticFile]:
    """The page and its files by their path under the page's folder."""
    return load_static_files(folder or resources.files(PAGE_PACKAGE).joinpath(PAGE_FOLDER))


def graphiql_page(path: str, *, anonymous_reads: bool) -> GraphiQLPage:
    """GraphiQL for the GraphQL endpoint at ``path``."""
    return GraphiQLPage(load_page_files(), anonymous_reads=anonymous_reads, route=asset_route(path))
