"""Settings from defaults, a TOML file, environment variables and the command line.

Later sources win: defaults < TOML file < environment < command line.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from features_gql.api import DEFAULT_DEADLINE
from features_gql.auth import AuthPolicy, build_policy
from features_gql.domain import validate_slug
from features_gql.errors import ConfigError, InvalidInput
from features_gql.graphql.admission import Limits
from features_gql.loggers import LOG_FORMATS, LogFormat
from features_gql.rate_limits import Rate, RateLimits

ENV_PREFIX = "FEATURES_GQL_"
#: Used when no store is configured: a SQLite file under the user's data directory.
DEFAULT_STORE = {"plugin": "sqlite"}


def _text(value: str, name: str) -> str:
    return value


def _secret(value: str, name: str) -> str | None:
    return value or None  # set but empty: as if unset


def _integer(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _number(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def data_directory() -> Path:
    """Where features-gql keeps its files by default: ``$XDG_DATA_HOME/features-gql``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "features-gql"


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


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


def _path(value: str, name: str) -> Path:
    return Path(value)


def _origins(value: str, name: str) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in value.split(",") if origin.strip())


@dataclass(frozen=True)
class Variable:
    """One environment variable: what it means, the setting it sets and how it is read."""

    meaning: str
    #: The :class:`Settings` field it sets; None for one read before the others.
    setting: str | None
    #: Reads the value (or says what is wrong with it); None leaves the setting alone.
    parse: Callable[[str, str], Any] = _text


#: Every environment variable read (the README and ``serve --help`` list them too).
ENVIRONMENT: dict[str, Variable] = {
    "FEATURES_GQL_CONFIG": Variable("config file (TOML)", None),
    "FEATURES_GQL_HOST": Variable("address to listen on", "host"),
    "FEATURES_GQL_PORT": Variable("port to listen on", "port", _integer),
    "FEATURES_GQL_STORE": Variable(
        "store: memory, sqlite:///path.db, or another plugin's URL", "store"
    ),
    "FEATURES_GQL_DEADLINE_SECONDS": Variable("deadline of every store call", "deadline", _number),
    "FEATURES_GQL_WORKERS": Variable("worker processes", "workers", _integer),
    "FEATURES_GQL_SLOW_REQUEST_MS": Variable(
        "log a warning for GraphQL requests slower than this", "slow_request_ms", _number
    ),
    "FEATURES_GQL_LOG_FORMAT": Variable("console or json", "log_format"),
    "FEATURES_GQL_LOG_LEVEL": Variable("DEBUG, INFO, WARNING, ERROR", "log_level"),
    "FEATURES_GQL_INTROSPECTION": Variable("true or false", "introspection", _bool),
    "FEATURES_GQL_GRAPHIQL": Variable(
        "true or false: serve GraphiQL to browsers at /graphql", "graphiql", _bool
    ),
    "FEATURES_GQL_UI": Variable("true or false: serve the control panel at /ui", "ui", _bool),
    "FEATURES_GQL_PLUGINS_DIR": Variable(
        "directory of local plugin .py files", "plugins_dir", _path
    ),
    "FEATURES_GQL_ADMIN_TOKEN": Variable(
        "an admin-scope bearer token for /admin/* (a token named admin)", "admin_token", _secret
    ),
    "FEATURES_GQL_ANONYMOUS": Variable(
        "what requests without a token may do: none, read or write", "anonymous"
    ),
    "FEATURES_GQL_CORS_ORIGINS": Variable(
        "browser origins allowed to call the API, comma-separated", "cors_origins", _origins
    ),
    "FEATURES_GQL_MAX_CONNECTIONS": Variable(
        "open connections per process", "max_connections", _integer
    ),
    "FEATURES_GQL_HEADER_TIMEOUT_SECONDS": Variable(
        "seconds a client has to send a request's headers", "header_timeout", _number
    ),
    "FEATURES_GQL_RATE_LIMIT_PER_TOKEN": Variable(
        "requests per second per token, as RATE or RATE/BURST (0: no limit)", "token_rate", _rate
    ),
    "FEATURES_GQL_RATE_LIMIT_PER_ADDRESS": Variable(
        "requests per second per client address, as RATE or RATE/BURST (0: no limit)",
        "address_rate",
        _rate,
    ),
    "FEATURES_GQL_RATE_LIMIT_PARSE_SECONDS": Variable(
        "seconds per second of parsing new query texts per client, as RATE or RATE/BURST "
        "(0: no limit)",
        "parse_rate",
        _rate,
    ),
    "FEATURES_GQL_MAX_UNPROVEN_CONNECTIONS": Variable(
        "connections still sending their request or awaiting connection_init, in all",
        "max_unproven_connections",
        _integer,
    ),
    "FEATURES_GQL_MAX_UNPROVEN_PER_ADDRESS": Variable(
        "the same, per client address (IPv6: per /64)", "max_unproven_per_address", _integer
    ),
    "FEATURES_GQL_MAX_BODIES_PER_PRINCIPAL": Variable(
        "request bodies still arriving per token (anonymous: per address)",
        "max_bodies_per_principal",
        _integer,
    ),
    "FEATURES_GQL_CATALOG_STRICT": Variable(
        "true: assign only features that are defined", "catalog_strict", _bool
    ),
    # -- snapshots and feed --
    "FEATURES_GQL_RETAIN_CHANGES": Variable(
        "keep only the latest N change events (default: all)", "retain_changes", _integer
    ),
    "FEATURES_GQL_UPSTREAM": Variable(
        "run as an edge replica of this GraphQL endpoint", "upstream", _secret
    ),
    "FEATURES_GQL_UPSTREAM_TOKEN": Variable(
        "the edge's bearer token (read scope) at the upstream", "upstream_token", _secret
    ),
    "FEATURES_GQL_MAX_STALENESS": Variable(
        "an edge is not ready when its copy is older (seconds)", "max_staleness", _number
    ),
}

MIN_ADMIN_TOKEN = 16
#: An origin as browsers send it: scheme://host[:port], nothing after.
_ORIGIN = re.compile(r"https?://[a-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9a-f:.]+\](:[0-9]{1,5})?")

_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    #: A ``[store]`` table, a ``--store`` string, or None for the default SQLite file.
    store: Mapping[str, Any] | str | None = None
    deadline: float = DEFAULT_DEADLINE
    #: A GraphQL request slower than this logs a warning naming its slowest store calls.
    slow_request_ms: float = 250.0
    log_format: LogFormat = "console"
    log_level: str = "INFO"
    loggers: tuple[str, ...] = ("loguru",)
    introspection: bool = True
    #: Answer hot query shapes through the compiled fast path (off only to compare).
    fast_path: bool = True
    graphiql: bool = True
    #: Serve the control panel (static files over the GraphQL API) at /ui.
    ui: bool = True
    plugins_dir: Path | None = None
    config_file: Path | None = field(default=None, compare=False)
    #: The bearer token of the admin endpoints (/admin/faults); None refuses them all.
    admin_token: str | None = field(default=None, repr=False)
    #: ``[auth.tokens.NAME]`` tables: ``scopes`` and ``sha256`` of each token.
    auth_tokens: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    #: ``[auth] anonymous``: none, read or write; None means the default (see auth.py).
    anonymous: str | None = None
    #: ``[auth] metrics``: "open", or the scope /metrics requires.
    metrics_access: str = "open"
    #: ``[limits]``: what one GraphQL request may cost, and the query cache's bounds.
    limits: Limits = field(default_factory=Limits)
    #: ``[catalog] strict``: refuse to assign a feature that is not defined (or archived).
    catalog_strict: bool = False
    #: Browser origins allowed to call the API (CORS), as ``https://host[:port]``; "*" is
    #: any origin. Empty: no cross-origin access.
    cors_origins: tuple[str, ...] = ()
    #: Open connections per process; None is the default (4096), lowered to what the
    #: open-file limit leaves room for.
    max_connections: int | None = None
    #: Seconds a client has to send a request's headers before its connection is closed.
    header_timeout: float = 10.0
    #: ``[rate_limits]``: token buckets per token, per client address, and of bytes of new
    #: query text per client (``features_gql/rate_limits.py``).
    token_rate: Rate = RateLimits().per_token
    address_rate: Rate = RateLimits().per_address
    parse_rate: Rate = RateLimits().parse_seconds
    #: Connections still sending their request's headers, or WebSockets awaiting
    #: connection_init, in all; None is half of max_connections.
    max_unproven_connections: int | None = None
    #: The same, from one address (an IPv6 /64): past it, its oldest is closed.
    max_unproven_per_address: int = 64
    #: Request bodies still arriving per principal (the anonymous one's per address):
    #: past it, the oldest is answered 429.
    max_bodies_per_principal: int = 32
    #: ``[openfeature] default_resource_type``: the resource type of an OFREP evaluation
    #: context without a ``resourceType`` attribute (None: such a context is invalid).
    openfeature_default_resource_type: str | None = None
    # -- snapshots and feed --
    #: ``[server] retain_changes``: keep only the latest N change events; None keeps all.
    retain_changes: int | None = None
    #: ``[upstream] url``: run as an edge replica of this GraphQL endpoint.
    upstream: str | None = None
    #: ``[upstream] token``: the edge's token at the upstream (read scope).
    upstream_token: str | None = field(default=None, repr=False)
    #: ``[upstream] max_staleness_seconds``: not ready when the copy is older than this.
    max_staleness: float | None = None
    #: ``[upstream] state_file``: where the edge keeps its sync position.
    upstream_state: Path | None = None

    @property
    def rate_limits(self) -> RateLimits:
        return RateLimits(self.token_rate, self.address_rate, self.parse_rate)


def _check(settings: Settings) -> Settings:
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(
            f"log format must be one of {', '.join(LOG_FORMATS)}, got {settings.log_format!r}"
        )
    if settings.log_level.upper() not in _LEVELS:
        raise ConfigError(
            f"log level must be one of {', '.join(_LEVELS)}, got {settings.log_level!r}"
        )
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {settings.port}")
    if settings.deadline <= 0:
        raise ConfigError(f"deadline must be a positive number of seconds, got {settings.deadline}")
    if not 1 <= settings.workers <= 64:
        raise ConfigError(f"workers must be between 1 and 64, got {settings.workers}")
    if settings.slow_request_ms < 0:
        raise ConfigError(f"slow request threshold must be >= 0 ms, got {settings.slow_request_ms}")
    if settings.admin_token is not None and len(settings.admin_token) < MIN_ADMIN_TOKEN:
        raise ConfigError(
            f"the admin token must be at least {MIN_ADMIN_TOKEN} characters "
            "(e.g. `openssl rand -hex 16`)"
        )
    if settings.upstream is not None:
        from features_gql.upstream import check_url

        check_url(settings.upstream)
        if settings.workers != 1:
            raise ConfigError(
                "an edge (--upstream) runs one process: it keeps one copy in step with the "
                "upstream; run more edges rather than --workers"
            )
    if settings.max_staleness is not None and settings.max_staleness <= 0:
        raise ConfigError(f"max_staleness must be positive, got {settings.max_staleness}")
    if settings.retain_changes is not None and settings.retain_changes < 1:
        raise ConfigError(f"retain_changes must be at least 1, got {settings.retain_changes}")
    policy(settings)  # a bad [auth] table fails here, with the rest of the configuration
    default_type = settings.openfeature_default_resource_type
    if default_type is not None:
        try:
            validate_slug(default_type, "[openfeature] default_resource_type")
        except InvalidInput as exc:
            raise ConfigError(exc.message) from None
    if settings.max_connections is not None and settings.max_connections < 1:
        raise ConfigError(f"max connections must be at least 1, got {settings.max_connections}")
    if not settings.header_timeout > 0:
        raise ConfigError(
            f"header timeout must be a positive number of seconds, got {settings.header_timeout}"
        )
    for name in (
        "max_unproven_connections",
        "max_unproven_per_address",
        "max_bodies_per_principal",
    ):
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    return replace(
        settings,
        log_level=settings.log_level.upper(),
        cors_origins=tuple(_origin(origin) for origin in settings.cors_origins),
    )


def _origin(value: str) -> str:
    origin = value.strip().lower().rstrip("/")
    if origin != "*" and not _ORIGIN.fullmatch(origin):
        raise ConfigError(
            f"CORS origin {value!r} must be scheme://host[:port] (e.g. https://app.example.com) "
            'or "*"'
        )
    return origin


def policy(settings: Settings) -> AuthPolicy:
    """The authentication policy the settings describe."""
    return build_policy(
        settings.auth_tokens,
        anonymous=settings.anonymous,
        admin_token=settings.admin_token,
        metrics=settings.metrics_access,
    )


#: Every key of the config file's tables, and its TOML type; ``[store]`` holds a store
#: plugin's own options instead.
TOML_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "server": {
        "host": str,
        "port": int,
        "workers": int,
        "deadline_seconds": (int, float),
        "slow_request_ms": (int, float),
        "introspection": bool,
        "fast_path": bool,
        "graphiql": bool,
        "ui": bool,
        "admin_token": str,
        "cors_origins": list,
        "max_connections": int,
        "header_timeout_seconds": (int, float),
        "max_unproven_connections": int,
        "max_unproven_per_address": int,
        "max_bodies_per_principal": int,
        "retain_changes": int,
    },
    "logging": {"format": str, "level": str, "loggers": list},
    "plugins": {"directory": str},
    "auth": {"anonymous": str, "metrics": str, "tokens": dict},
    "openfeature": {"default_resource_type": str},
    "upstream": {
        "url": str,
        "token": str,
        "max_staleness_seconds": (int, float),
        "state_file": str,
    },
    "rate_limits": {
        "per_token": (int, float),
        "per_token_burst": (int, float),
        "per_address": (int, float),
        "per_address_burst": (int, float),
        "parse_seconds": (int, float),
        "parse_seconds_burst": (int, float),
    },
    "limits": {
        "max_tokens": int,
        "max_selections": int,
        "max_depth": int,
        "max_cost": int,
        "cache_entries": int,
        "cache_mb": int,
    },
}

#: How the TOML types a key accepts are named in errors.
_KINDS: dict[type | tuple[type, ...], str] = {
    str: "a string",
    int: "an integer",
    (int, float): "a number",
    bool: "true or false",
    list: "a list",
}


def _take(
    table: Mapping[str, Any], section: str, allowed: dict[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"[{section}]: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    for key, kinds in allowed.items():
        if key in table and (
            not isinstance(table[key], kinds)
            or (
                isinstance(table[key], bool)
                and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))
            )
        ):
            raise ConfigError(
                f"[{section}] {key} has the wrong type: it must be {_KINDS[kinds]}, "
                f"got {table[key]!r}"
            )
    return dict(table)


def from_toml(path: Path, base: Settings = Settings()) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    tables = {
        "server",
        "logging",
        "plugins",
        "store",
        "auth",
        "limits",
        "rate_limits",
        "openfeature",
        "upstream",
        "catalog",
    }
    unknown = sorted(set(data) - tables)
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(unknown)}; known: {', '.join(sorted(tables))}"
        )
    changes: dict[str, Any] = {"config_file": path}
    server = _take(data.get("server", {}), "server", TOML_KEYS["server"])
    # These keys are named as the Settings fields they set.
    for key in (
        "host",
        "port",
        "workers",
        "introspection",
        "fast_path",
        "graphiql",
        "ui",
        "admin_token",
    ):
        if key in server:
            changes[key] = server[key]
    if "slow_request_ms" in server:
        changes["slow_request_ms"] = float(server["slow_request_ms"])
    if "deadline_seconds" in server:
        changes["deadline"] = float(server["deadline_seconds"])
    if "cors_origins" in server:
        if not all(isinstance(origin, str) for origin in server["cors_origins"]):
            raise ConfigError(
                f"[server] cors_origins must be a list of strings, got {server['cors_origins']!r}"
            )
        changes["cors_origins"] = tuple(server["cors_origins"])
    if "max_connections" in server:
        changes["max_connections"] = server["max_connections"]
    if "header_timeout_seconds" in server:
        changes["header_timeout"] = float(server["header_timeout_seconds"])
    for key in ("max_unproven_connections", "max_unproven_per_address", "max_bodies_per_principal"):
        if key in server:
            changes[key] = server[key]
    if "retain_changes" in server:
        changes["retain_changes"] = server["retain_changes"]
    logging_ = _take(data.get("logging", {}), "logging", TOML_KEYS["logging"])
    if "format" in logging_:
        changes["log_format"] = logging_["format"]
    if "level" in logging_:
        changes["log_level"] = logging_["level"]
    if "loggers" in logging_:
        changes["loggers"] = tuple(str(name) for name in logging_["loggers"])
    plugins = _take(data.get("plugins", {}), "plugins", TOML_KEYS["plugins"])
    if "directory" in plugins:
        changes["plugins_dir"] = (path.parent / plugins["directory"]).resolve()
    changes.update(_auth_from_toml(data.get("auth", {})))
    if "limits" in data:
        changes["limits"] = _limits_from_toml(data["limits"])
    changes.update(_rate_limits_from_toml(data.get("rate_limits", {}), base))
    catalog = _take(data.get("catalog", {}), "catalog", {"strict": bool})
    if "strict" in catalog:
        changes["catalog_strict"] = catalog["strict"]
    openfeature = _take(data.get("openfeature", {}), "openfeature", TOML_KEYS["openfeature"])
    if "default_resource_type" in openfeature:
        changes["openfeature_default_resource_type"] = openfeature["default_resource_type"]
    upstream = _take(data.get("upstream", {}), "upstream", TOML_KEYS["upstream"])
    if "url" in upstream:
        changes["upstream"] = upstream["url"]
    if "token" in upstream:
        changes["upstream_token"] = upstream["token"]
    if "max_staleness_seconds" in upstream:
        changes["max_staleness"] = float(upstream["max_staleness_seconds"])
    if "state_file" in upstream:
        changes["upstream_state"] = (path.parent / upstream["state_file"]).resolve()
    if "store" in data:
        if not isinstance(data["store"], dict):
            raise ConfigError(f'{path}: [store] must be a table with plugin = "<name>"')
        changes["store"] = data["store"]
    return replace(base, **changes)


def _limits_from_toml(table: Mapping[str, Any]) -> Limits:
    given = _take(table, "limits", TOML_KEYS["limits"])
    for key, value in given.items():
        if value < 1:
            raise ConfigError(f"[limits] {key} must be a positive whole number, got {value}")
    if "cache_mb" in given:
        given["cache_bytes"] = given.pop("cache_mb") * 1024 * 1024
    return replace(Limits(), **given)


def _rate_limits_from_toml(table: Mapping[str, Any], base: Settings) -> dict[str, Rate]:
    given = _take(table, "rate_limits", TOML_KEYS["rate_limits"])
    changes: dict[str, Rate] = {}
    for key, field_name in (
        ("per_token", "token_rate"),
        ("per_address", "address_rate"),
        ("parse_seconds", "parse_rate"),
    ):
        if key not in given and f"{key}_burst" not in given:
            continue
        current: Rate = getattr(base, field_name)
        rate = float(given.get(key, current.rate))
        burst = float(given.get(f"{key}_burst", 2 * rate if key in given else current.burst))
        changes[field_name] = _checked_rate(rate, burst, f"[rate_limits] {key}")
    return changes


def _auth_from_toml(table: Mapping[str, Any]) -> dict[str, Any]:
    auth = _take(table, "auth", TOML_KEYS["auth"])
    changes: dict[str, Any] = {}
    if "anonymous" in auth:
        changes["anonymous"] = auth["anonymous"]
    if "metrics" in auth:
        changes["metrics_access"] = auth["metrics"]
    tokens = auth.get("tokens", {})
    for name, entry in tokens.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"[auth.tokens.{name}] must be a table with scopes and sha256")
        _take(entry, f"auth.tokens.{name}", {"scopes": list, "sha256": str})
    changes["auth_tokens"] = tokens
    return changes


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
    file = config_file or (
        Path(env["FEATURES_GQL_CONFIG"]) if env.get("FEATURES_GQL_CONFIG") else None
    )
    if file is not None:
        settings = from_toml(file, settings)
    settings = from_environment(env, settings)
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return _check(settings)
