"""Settings from defaults, a TOML file, environment variables and the command line.

Later sources win: defaults < TOML file < environment < command line.

Each setting is declared once, as a field of :class:`Settings` (see
``features_gql.declarations``); the environment variables (:data:`ENVIRONMENT`), the
config file's keys (:data:`TOML_KEYS`), the bounds checks, the options of
``features-gql serve`` and the README's configuration table are derived from the
declarations.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from features_gql.api import DEFAULT_DEADLINE
from features_gql.auth import AuthPolicy, build_policy
from features_gql.declarations import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    OPTIONAL_TEXT,
    PATH,
    TABLES,
    TEXT,
    TEXTS,
    Composite,
    Declared,
    Kind,
    OneOf,
    Range,
    declared,
    setting,
    setting_from,
)
from features_gql.domain import validate_slug
from features_gql.errors import ConfigError, InvalidInput
from features_gql.limits import Limits
from features_gql.loggers import LOG_FORMATS, LogFormat
from features_gql.rate_limits import Rate, RateLimits

ENV_PREFIX = "FEATURES_GQL_"
#: Used when no store is configured: a SQLite file under the user's data directory.
DEFAULT_STORE = {"plugin": "sqlite"}
MIN_ADMIN_TOKEN = 16
#: An origin as browsers send it: scheme://host[:port], nothing after.
_ORIGIN = re.compile(r"https?://[a-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9a-f:.]+\](:[0-9]{1,5})?")
_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def data_directory() -> Path:
    """Where features-gql keeps its files by default: ``$XDG_DATA_HOME/features-gql``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "features-gql"


# -- what is read in more than one way ------------------------------------------------


def _rate(value: str, name: str) -> Rate:
    """``RATE`` or ``RATE/BURST`` (per second; a burst of twice the rate when not given);
    0 switches the limit off."""
    text = value.strip()
    rate_text, _, burst_text = text.partition("/")
    try:
        rate = float(rate_text)
        burst = float(burst_text) if burst_text else 2 * rate
    except ValueError:
        raise ConfigError(
            f"{name} must be RATE or RATE/BURST (e.g. 1000/2000; 0 for no limit), got {value!r}"
        ) from None
    return _checked_rate(rate, burst, name)


def _checked_rate(rate: float, burst: float, name: str) -> Rate:
    if not (math.isfinite(rate) and math.isfinite(burst)) or rate < 0 or burst < 0:
        raise ConfigError(f"{name} must be zero or positive, got {rate:g}/{burst:g}")
    if rate > 0 and burst <= 0:
        raise ConfigError(f"{name}: the burst must be positive, got {burst:g}")
    return Rate(rate, burst)


#: A token bucket: ``RATE`` or ``RATE/BURST`` in its variable, two keys in the config file.
RATE = Kind("a number", (int, float), _rate, env_note="(`RATE` or `RATE/BURST`)")


def _rate_keys(key: str) -> Composite:
    """``[rate_limits] KEY`` and ``KEY_burst`` (twice the rate when only the rate is given)."""

    def load(given: Mapping[str, Any], current: Rate, directory: Path) -> Rate:
        rate = float(given.get(key, current.rate))
        burst = float(given.get(f"{key}_burst", 2 * rate if key in given else current.burst))
        return _checked_rate(rate, burst, f"[rate_limits] {key}")

    return Composite("rate_limits", {key: NUMBER, f"{key}_burst": NUMBER}, load)


#: ``[limits]``: the fields of :class:`Limits`, with the cache's bytes given in MiB.
_LIMIT_KEYS = {
    "max_tokens": INTEGER,
    "max_selections": INTEGER,
    "max_depth": INTEGER,
    "max_cost": INTEGER,
    "cache_entries": INTEGER,
    "cache_mb": INTEGER,
}


def _limits(given: Mapping[str, Any], current: Limits, directory: Path) -> Limits:
    changes = dict(given)
    for key, value in changes.items():
        if value < 1:
            raise ConfigError(f"[limits] {key} must be a positive whole number, got {value}")
    if "cache_mb" in changes:
        changes["cache_bytes"] = changes.pop("cache_mb") * 1024 * 1024
    return replace(current, **changes)


_TOKEN_KEYS = {"scopes": TEXTS, "sha256": TEXT}


def _tokens(given: Mapping[str, Any], current: Any, directory: Path) -> Mapping[str, Any]:
    tokens: Mapping[str, Any] = given["tokens"]
    for name, entry in tokens.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"[auth.tokens.{name}] must be a table with scopes and sha256")
        _take(entry, f"auth.tokens.{name}", _TOKEN_KEYS)
    return tokens


def _store(given: Mapping[str, Any], current: Any, directory: Path) -> Mapping[str, Any]:
    return given  # the store plugin checks its own options when it opens


# -- checks beyond bounds ---------------------------------------------------------------


def _origins(value: tuple[str, ...], name: str) -> tuple[str, ...]:
    return tuple(_origin(origin) for origin in value)


def _origin(value: str) -> str:
    origin = value.strip().lower().rstrip("/")
    if origin != "*" and not _ORIGIN.fullmatch(origin):
        raise ConfigError(
            f"CORS origin {value!r} must be scheme://host[:port] (e.g. https://app.example.com) "
            'or "*"'
        )
    return origin


def _admin_token(value: str | None, name: str) -> str | None:
    if value is not None and len(value) < MIN_ADMIN_TOKEN:
        raise ConfigError(
            f"the admin token must be at least {MIN_ADMIN_TOKEN} characters "
            "(e.g. `openssl rand -hex 16`)"
        )
    return value


def _slug(value: str | None, name: str) -> str | None:
    if value is not None:
        try:
            validate_slug(value, "[openfeature] default_resource_type")
        except InvalidInput as exc:
            raise ConfigError(exc.message) from None
    return value


def _upstream_url(value: str | None, name: str) -> str | None:
    if value is not None:
        from features_gql.upstream import check_url

        check_url(value)
    return value


def _positive_seconds(label: str) -> Range:
    return Range(above=0, label=label, must_be="a positive number of seconds")


@dataclass(frozen=True)
class Settings:
    """Every setting, each declared once: its type, default, kind, environment variable,
    TOML key, option, bounds and help (``features_gql.declarations``)."""

    # -- serving -----------------------------------------------------------------------
    host: str = setting(
        "127.0.0.1",
        "address to listen on",
        env="FEATURES_GQL_HOST",
        toml="server.host",
        option="--host",
    )
    port: int = setting(
        8080,
        "port to listen on",
        kind=INTEGER,
        env="FEATURES_GQL_PORT",
        toml="server.port",
        option="--port",
        check=Range(0, 65535),
    )
    workers: int = setting(
        1,
        "worker processes accepting on one socket; not for the memory store",
        kind=INTEGER,
        env="FEATURES_GQL_WORKERS",
        toml="server.workers",
        option="--workers",
        check=Range(1, 64),
        default_doc="`1`: processes accepting on one socket that the first process binds; "
        "needs a store processes share (sqlite, mongodb)",
    )
    #: A ``[store]`` table, a ``--store`` string, or None for the default SQLite file.
    store: Mapping[str, Any] | str | None = setting(
        None,
        "memory, sqlite:///path/to/file.db, or a URL another store plugin handles "
        "(default: a SQLite file in $XDG_DATA_HOME/features-gql/, "
        "~/.local/share/features-gql/features.db)",
        env="FEATURES_GQL_STORE",
        toml=Composite("store", None, _store),
        option="--store",
        commands="store",
        default_doc="SQLite at `$XDG_DATA_HOME/features-gql/features.db` (`~/.local/share/…`)",
    )
    deadline: float = setting(
        DEFAULT_DEADLINE,
        "seconds each store call may take",
        kind=NUMBER,
        env="FEATURES_GQL_DEADLINE_SECONDS",
        toml="server.deadline_seconds",
        option="--deadline",
        check=_positive_seconds("deadline"),
    )
    #: A GraphQL request slower than this logs a warning naming its slowest store calls.
    slow_request_ms: float = setting(
        250.0,
        "warn about GraphQL requests slower than this, with their slowest store calls",
        kind=NUMBER,
        env="FEATURES_GQL_SLOW_REQUEST_MS",
        toml="server.slow_request_ms",
        option="--slow-request-ms",
        check=Range(minimum=0, label="slow request threshold", must_be=">= 0 ms"),
    )
    log_format: LogFormat = setting(
        "console",
        "console or json",
        env="FEATURES_GQL_LOG_FORMAT",
        toml="logging.format",
        option="--log-format",
        commands="all",
        check=OneOf(LOG_FORMATS, "log format"),
        default_doc="`console` (or `json`)",
    )
    log_level: str = setting(
        "INFO",
        "DEBUG, INFO, WARNING, ERROR",
        env="FEATURES_GQL_LOG_LEVEL",
        toml="logging.level",
        option="--log-level",
        commands="all",
        check=OneOf(_LEVELS, "log level", upper=True),
    )
    loggers: tuple[str, ...] = setting(
        ("loguru",),
        "the logger plugins that receive operation events",
        kind=TEXTS,
        toml="logging.loggers",
        default_doc='`["loguru"]`: the logger plugins that receive operation events '
        "(`features-gql plugins` lists them)",
    )
    introspection: bool = setting(
        True,
        "answer introspection queries",
        kind=BOOLEAN,
        env="FEATURES_GQL_INTROSPECTION",
        toml="server.introspection",
        option="--no-introspection",
        default_doc="on",
    )
    graphiql: bool = setting(
        True,
        "serve GraphiQL to browsers at /graphql",
        kind=BOOLEAN,
        env="FEATURES_GQL_GRAPHIQL",
        toml="server.graphiql",
        option="--no-graphiql",
        default_doc="`true`: a browser opening `/graphql` gets [GraphiQL](#graphiql); "
        "`false`: no GraphiQL (a browser gets a 404, and its files are not served)",
    )
    ui: bool = setting(
        True,
        "serve the control panel at /ui",
        kind=BOOLEAN,
        env="FEATURES_GQL_UI",
        toml="server.ui",
        option="--no-ui",
        default_doc="`true`: the [control panel](#control-panel) at `/ui/`; `false`: a 404 there",
    )
    fast_path: bool = setting(
        True,
        "answer hot query shapes through the compiled fast path (off only to compare)",
        kind=BOOLEAN,
        toml="server.fast_path",
        default_doc="`true`: the compiled fast path (see [Performance](#performance)); "
        "`false` only to compare",
    )
    # -- who may do what ---------------------------------------------------------------
    #: The bearer token of the admin endpoints (/admin/faults); None refuses them all.
    admin_token: str | None = setting(
        None,
        "an admin-scope bearer token for /admin/* (a token named admin)",
        secret=True,
        kind=OPTIONAL_TEXT,
        env="FEATURES_GQL_ADMIN_TOKEN",
        toml="server.admin_token",
        check=_admin_token,
        default_doc="unset; a token named `admin` with the `admin` scope",
    )
    auth_tokens: Mapping[str, Mapping[str, Any]] = setting_from(
        dict,
        "the scopes and sha256 of each token, by name",
        secret=True,
        toml=Composite(
            "auth",
            {"tokens": TABLES},
            _tokens,
            doc="`[auth] tokens` (`[auth.tokens.NAME]` tables)",
        ),
        option_doc="`features-gql token create`",
        default_doc="none; see [Security](#security)",
    )
    #: None means the default (see auth.py).
    anonymous: str | None = setting(
        None,
        "what requests without a token may do: none, read or write",
        env="FEATURES_GQL_ANONYMOUS",
        toml="auth.anonymous",
        default_doc="`write` with no tokens (loopback only), else `none`",
    )
    metrics_access: str = setting(
        "open",
        '"open", or the scope /metrics requires',
        toml="auth.metrics",
        default_doc="`open`; or the scope `/metrics` requires",
    )
    #: As ``https://host[:port]``; "*" is any origin. Empty: no cross-origin access.
    cors_origins: tuple[str, ...] = setting(
        (),
        "browser origins allowed to call the API (CORS), comma-separated in the variable",
        kind=TEXTS,
        env="FEATURES_GQL_CORS_ORIGINS",
        toml="server.cors_origins",
        check=_origins,
        default_doc="none: no cross-origin browser access; see [Security](#security)",
    )
    # -- connections and limits --------------------------------------------------------
    #: None is 4096, lowered to what the open-file limit leaves room for.
    max_connections: int | None = setting(
        None,
        "open connections per process",
        kind=INTEGER,
        env="FEATURES_GQL_MAX_CONNECTIONS",
        toml="server.max_connections",
        check=Range(minimum=1, label="max connections"),
        default_doc="`4096`, lowered to what the open-file limit leaves room for",
    )
    header_timeout: float = setting(
        10.0,
        "seconds a client has to send a request's headers",
        kind=NUMBER,
        env="FEATURES_GQL_HEADER_TIMEOUT_SECONDS",
        toml="server.header_timeout_seconds",
        check=_positive_seconds("header timeout"),
    )
    #: None is half of max_connections.
    max_unproven_connections: int | None = setting(
        None,
        "connections still sending their request or awaiting connection_init, in all",
        kind=INTEGER,
        env="FEATURES_GQL_MAX_UNPROVEN_CONNECTIONS",
        toml="server.max_unproven_connections",
        check=Range(minimum=1),
        default_doc="half of `max_connections`: connections still sending their request's "
        "headers, or WebSockets awaiting `connection_init`, in all "
        "([budgets](#connections-and-headers))",
    )
    max_unproven_per_address: int = setting(
        64,
        "the same, per client address (IPv6: per /64); past it, its oldest is closed",
        kind=INTEGER,
        env="FEATURES_GQL_MAX_UNPROVEN_PER_ADDRESS",
        toml="server.max_unproven_per_address",
        check=Range(minimum=1),
        default_doc="`64`: the same, from one address (an IPv6 /64)",
    )
    max_bodies_per_principal: int = setting(
        32,
        "request bodies still arriving per token (anonymous: per address)",
        kind=INTEGER,
        env="FEATURES_GQL_MAX_BODIES_PER_PRINCIPAL",
        toml="server.max_bodies_per_principal",
        check=Range(minimum=1),
        default_doc="`32`: request bodies still arriving per token (without one: per address)",
    )
    #: Token buckets (``features_gql/rate_limits.py``); :attr:`rate_limits` holds all three.
    token_rate: Rate = setting(
        RateLimits().per_token,
        "requests a second per token, as RATE or RATE/BURST (0: no limit)",
        kind=RATE,
        env="FEATURES_GQL_RATE_LIMIT_PER_TOKEN",
        toml=_rate_keys("per_token"),
        default_doc="`20000/40000` requests a second per token; `0`: no limit; "
        "see [Rate limits](#rate-limits)",
    )
    address_rate: Rate = setting(
        RateLimits().per_address,
        "requests a second per client address, as RATE or RATE/BURST (0: no limit)",
        kind=RATE,
        env="FEATURES_GQL_RATE_LIMIT_PER_ADDRESS",
        toml=_rate_keys("per_address"),
        default_doc="`20000/40000` requests a second per client address (an IPv6 client: its /64)",
    )
    parse_rate: Rate = setting(
        RateLimits().parse_seconds,
        "seconds (of CPU) a second of parsing new query texts per client, as RATE or "
        "RATE/BURST (0: no limit)",
        kind=RATE,
        env="FEATURES_GQL_RATE_LIMIT_PARSE_SECONDS",
        toml=_rate_keys("parse_seconds"),
        default_doc="`0.2/1`: seconds (of CPU) a second of parsing query texts the service "
        "has not parsed before, per client",
    )
    limits: Limits = setting(
        Limits(),
        "what one GraphQL request may cost, and the query cache's bounds",
        toml=Composite("limits", _LIMIT_KEYS, _limits, doc="`[limits] …`"),
        default_doc="see [Security](#security)",
    )
    # -- features ----------------------------------------------------------------------
    catalog_strict: bool = setting(
        False,
        "assign only features that are defined (and not archived)",
        kind=BOOLEAN,
        env="FEATURES_GQL_CATALOG_STRICT",
        toml="catalog.strict",
        default_doc="`false`; `true` assigns only defined features ([strict mode](#the-catalog))",
    )
    #: None: an OFREP context without a ``resourceType`` attribute is invalid.
    openfeature_default_resource_type: str | None = setting(
        None,
        "the resource type of an OFREP evaluation context without resourceType",
        toml="openfeature.default_resource_type",
        check=_slug,
        default_doc="none; the resource type of an OFREP context without `resourceType`, "
        "see [OpenFeature](#openfeature)",
    )
    # -- snapshots and feed ------------------------------------------------------------
    #: None keeps all.
    retain_changes: int | None = setting(
        None,
        "keep only the latest N change events (default: all)",
        kind=INTEGER,
        env="FEATURES_GQL_RETAIN_CHANGES",
        toml="server.retain_changes",
        check=Range(minimum=1),
        default_doc="all: keep only the latest N change events (replicas load "
        "[snapshots](#deployment-shapes); older revisions answer `RESYNC_REQUIRED`)",
    )
    upstream: str | None = setting(
        None,
        "run as an edge replica of this features-gql GraphQL endpoint "
        "(http://central:8080/graphql): a persistent copy in --store (default: a SQLite "
        "file edge.db beside the default one) that answers reads, forwards writes, and "
        "keeps answering while the upstream is down",
        kind=OPTIONAL_TEXT,
        env="FEATURES_GQL_UPSTREAM",
        toml="upstream.url",
        option="--upstream",
        metavar="URL",
        check=_upstream_url,
        default_doc="none; run as an [edge replica](#the-edge-replica) of that GraphQL endpoint",
    )
    upstream_token: str | None = setting(
        None,
        "the edge's bearer token at the upstream, read scope (the variable keeps it out of "
        "the process list)",
        secret=True,
        kind=OPTIONAL_TEXT,
        env="FEATURES_GQL_UPSTREAM_TOKEN",
        toml="upstream.token",
        option="--upstream-token",
        metavar="TOKEN",
        default_doc="none; the edge's token at the upstream (`read` scope)",
    )
    max_staleness: float | None = setting(
        None,
        "an edge is not ready (/readyz 503) while its copy is older than this (seconds)",
        kind=NUMBER,
        env="FEATURES_GQL_MAX_STALENESS",
        toml="upstream.max_staleness_seconds",
        option="--max-staleness",
        metavar="SECONDS",
        check=Range(above=0),
        default_doc="none; an edge whose copy is older is not ready",
    )
    upstream_state: Path | None = setting(
        None,
        "where the edge keeps its sync position",
        kind=PATH,
        toml="upstream.state_file",
        default_doc="beside the edge's SQLite file (`edge.db.upstream.json`)",
    )
    # -- where the rest comes from -----------------------------------------------------
    plugins_dir: Path | None = setting(
        None,
        "also load plugins from the .py files in this directory (except test_*.py and conftest.py)",
        kind=PATH,
        env="FEATURES_GQL_PLUGINS_DIR",
        toml="plugins.directory",
        option="--plugins-dir",
        commands="all",
    )
    #: Read before the others, from its option or its variable; not a key of the file.
    config_file: Path | None = setting(
        None,
        "a TOML config file",
        compare=False,
        kind=PATH,
        env="FEATURES_GQL_CONFIG",
        option="--config",
        commands="all",
    )

    @property
    def rate_limits(self) -> RateLimits:
        return RateLimits(self.token_rate, self.address_rate, self.parse_rate)


#: Every setting, in the order of its declaration.
SETTINGS: tuple[Declared, ...] = declared(Settings)
#: The setting that says where the others are.
CONFIG_FILE = "config_file"


@dataclass(frozen=True)
class Variable:
    """One environment variable: what it means, the setting it sets and how it is read."""

    meaning: str
    #: The :class:`Settings` field it sets; None for one read before the others.
    setting: str | None
    #: Reads the value (or says what is wrong with it); a None read leaves the setting alone.
    parse: Callable[[str, str], Any]


#: Every environment variable read.
ENVIRONMENT: dict[str, Variable] = {
    each.spec.env: Variable(
        f"true or false: {each.spec.help}" if each.spec.kind is BOOLEAN else each.spec.help,
        None if each.name == CONFIG_FILE else each.name,
        each.spec.kind.parse,
    )
    for each in SETTINGS
    if each.spec.env is not None
}
#: The environment variable that names the config file.
(CONFIG_VARIABLE,) = (name for name, variable in ENVIRONMENT.items() if variable.setting is None)


def _toml_keys() -> dict[str, dict[str, Kind]]:
    keys: dict[str, dict[str, Kind]] = {}
    for each in SETTINGS:
        if each.table is None or each.toml_keys is None:
            continue
        table = keys.setdefault(each.table, {})
        for key, kind in each.toml_keys.items():
            if key in table:
                raise TypeError(f"[{each.table}] {key} is declared twice")
            table[key] = kind
    return keys


#: Every key of the config file's tables, and its kind; ``[store]`` holds a store
#: plugin's own options instead.
TOML_KEYS: dict[str, dict[str, Kind]] = _toml_keys()
#: Every table of the config file.
TOML_TABLES: tuple[str, ...] = tuple(sorted({e.table for e in SETTINGS if e.table is not None}))


def _check(settings: Settings) -> Settings:
    """Each setting within its bounds (some normalized), then what they must agree on."""
    settings = replace(
        settings,
        **{
            each.name: each.spec.check(getattr(settings, each.name), each.name)
            for each in SETTINGS
            if each.spec.check is not None
        },
    )
    if settings.upstream is not None and settings.workers != 1:
        raise ConfigError(
            "an edge (--upstream) runs one process: it keeps one copy in step with the "
            "upstream; run more edges rather than --workers"
        )
    policy(settings)  # a bad [auth] table fails here, with the rest of the configuration
    return settings


def policy(settings: Settings) -> AuthPolicy:
    """The authentication policy the settings describe."""
    return build_policy(
        settings.auth_tokens,
        anonymous=settings.anonymous,
        admin_token=settings.admin_token,
        metrics=settings.metrics_access,
    )


def _take(table: Mapping[str, Any], section: str, allowed: Mapping[str, Kind]) -> None:
    """Refuses a key that is not known, or a value of the wrong type."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"[{section}]: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    for key, kind in allowed.items():
        if key in table and not kind.accepts(table[key]):
            raise ConfigError(
                f"[{section}] {key} has the wrong type: it must be {kind.name}, got {table[key]!r}"
            )


#: How a table is described when the file has something else in its place.
_SHAPES = {"store": 'a table with plugin = "<name>"'}


def from_toml(path: Path, base: Settings = Settings()) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(TOML_TABLES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(unknown)}; known: {', '.join(TOML_TABLES)}"
        )
    for table, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{table}] must be {_SHAPES.get(table, 'a table')}")
        if table in TOML_KEYS:
            _take(value, table, TOML_KEYS[table])
    changes: dict[str, Any] = {CONFIG_FILE: path}
    for each in SETTINGS:
        if each.table not in data:
            continue
        table, keys = data[each.table], each.toml_keys
        given = table if keys is None else {key: table[key] for key in keys if key in table}
        if given or keys is None:
            changes[each.name] = each.load(given, getattr(base, each.name), path.parent)
    return replace(base, **changes)


def from_environment(env: Mapping[str, str], base: Settings) -> Settings:
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in ENVIRONMENT)
    if unknown:
        raise ConfigError(
            f"unknown environment variable(s) {', '.join(unknown)}; known: {', '.join(ENVIRONMENT)}"
        )
    changes: dict[str, Any] = {}
    for name, variable in ENVIRONMENT.items():
        if name in env and variable.setting is not None:
            value = variable.parse(env[name], name)
            if value is not None:
                changes[variable.setting] = value
    return replace(base, **changes)


def load_settings(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then the TOML file, then the environment, then explicit overrides."""
    env = dict(os.environ if env is None else env)
    settings = Settings()
    file = config_file or (Path(env[CONFIG_VARIABLE]) if env.get(CONFIG_VARIABLE) else None)
    if file is not None:
        settings = from_toml(file, settings)
    settings = from_environment(env, settings)
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return _check(settings)
