"""Settings from defaults, a TOML file, environment variables and the command line.

Later sources win: defaults < TOML file < environment < command line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from features_gql.api import DEFAULT_DEADLINE
from features_gql.auth import AuthPolicy, build_policy
from features_gql.errors import ConfigError
from features_gql.graphql.admission import Limits
from features_gql.loggers import LOG_FORMATS, LogFormat

ENV_PREFIX = "FEATURES_GQL_"

#: Every environment variable read, and what it sets (the README lists them too).
ENVIRONMENT = {
    "FEATURES_GQL_CONFIG": "config file (TOML)",
    "FEATURES_GQL_HOST": "address to listen on",
    "FEATURES_GQL_PORT": "port to listen on",
    "FEATURES_GQL_STORE": "store: memory, sqlite:///path.db, or another plugin's URL",
    "FEATURES_GQL_DEADLINE_SECONDS": "deadline of every store call",
    "FEATURES_GQL_WORKERS": "processes sharing the port",
    "FEATURES_GQL_SLOW_REQUEST_MS": "log a warning for GraphQL requests slower than this",
    "FEATURES_GQL_LOG_FORMAT": "console or json",
    "FEATURES_GQL_LOG_LEVEL": "DEBUG, INFO, WARNING, ERROR",
    "FEATURES_GQL_INTROSPECTION": "true or false",
    "FEATURES_GQL_PLUGINS_DIR": "directory of local plugin .py files",
    "FEATURES_GQL_ADMIN_TOKEN": "an admin-scope bearer token for /admin/* (a token named admin)",
    "FEATURES_GQL_ANONYMOUS": "what requests without a token may do: none, read or write",
    "FEATURES_GQL_CATALOG_STRICT": "true: assign only features that are defined",
}

MIN_ADMIN_TOKEN = 16

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


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


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
    policy(settings)  # a bad [auth] table fails here, with the rest of the configuration
    return replace(settings, log_level=settings.log_level.upper())


def policy(settings: Settings) -> AuthPolicy:
    """The authentication policy the settings describe."""
    return build_policy(
        settings.auth_tokens,
        anonymous=settings.anonymous,
        admin_token=settings.admin_token,
        metrics=settings.metrics_access,
    )


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
            raise ConfigError(f"[{section}] {key} has the wrong type: {table[key]!r}")
    return dict(table)


def from_toml(path: Path, base: Settings = Settings()) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    known = {"server", "logging", "plugins", "store", "auth", "limits", "catalog"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    changes: dict[str, Any] = {"config_file": path}
    server = _take(
        data.get("server", {}),
        "server",
        {
            "host": str,
            "port": int,
            "workers": int,
            "deadline_seconds": (int, float),
            "slow_request_ms": (int, float),
            "introspection": bool,
            "fast_path": bool,
            "graphiql": bool,
            "admin_token": str,
        },
    )
    # These keys are named as the Settings fields they set.
    for key in ("host", "port", "workers", "introspection", "fast_path", "graphiql", "admin_token"):
        if key in server:
            changes[key] = server[key]
    if "slow_request_ms" in server:
        changes["slow_request_ms"] = float(server["slow_request_ms"])
    if "deadline_seconds" in server:
        changes["deadline"] = float(server["deadline_seconds"])
    logging_ = _take(
        data.get("logging", {}), "logging", {"format": str, "level": str, "loggers": list}
    )
    if "format" in logging_:
        changes["log_format"] = logging_["format"]
    if "level" in logging_:
        changes["log_level"] = logging_["level"]
    if "loggers" in logging_:
        changes["loggers"] = tuple(str(name) for name in logging_["loggers"])
    plugins = _take(data.get("plugins", {}), "plugins", {"directory": str})
    if "directory" in plugins:
        changes["plugins_dir"] = (path.parent / plugins["directory"]).resolve()
    changes.update(_auth_from_toml(data.get("auth", {})))
    if "limits" in data:
        changes["limits"] = _limits_from_toml(data["limits"])
    catalog = _take(data.get("catalog", {}), "catalog", {"strict": bool})
    if "strict" in catalog:
        changes["catalog_strict"] = catalog["strict"]
    if "store" in data:
        if not isinstance(data["store"], dict):
            raise ConfigError(f'{path}: [store] must be a table with plugin = "<name>"')
        changes["store"] = data["store"]
    return replace(base, **changes)


def _limits_from_toml(table: Mapping[str, Any]) -> Limits:
    names = ("max_tokens", "max_selections", "max_depth", "max_cost", "cache_entries", "cache_mb")
    given = _take(table, "limits", dict.fromkeys(names, int))
    for key, value in given.items():
        if value < 1:
            raise ConfigError(f"[limits] {key} must be a positive whole number, got {value}")
    if "cache_mb" in given:
        given["cache_bytes"] = given.pop("cache_mb") * 1024 * 1024
    return replace(Limits(), **given)


def _auth_from_toml(table: Mapping[str, Any]) -> dict[str, Any]:
    auth = _take(table, "auth", {"anonymous": str, "metrics": str, "tokens": dict})
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
    if "FEATURES_GQL_HOST" in env:
        changes["host"] = env["FEATURES_GQL_HOST"]
    if "FEATURES_GQL_PORT" in env:
        try:
            changes["port"] = int(env["FEATURES_GQL_PORT"])
        except ValueError:
            raise ConfigError(
                f"FEATURES_GQL_PORT must be a number, got {env['FEATURES_GQL_PORT']!r}"
            ) from None
    if "FEATURES_GQL_WORKERS" in env:
        try:
            changes["workers"] = int(env["FEATURES_GQL_WORKERS"])
        except ValueError:
            raise ConfigError("FEATURES_GQL_WORKERS must be a whole number") from None
    if "FEATURES_GQL_STORE" in env:
        changes["store"] = env["FEATURES_GQL_STORE"]
    if "FEATURES_GQL_DEADLINE_SECONDS" in env:
        try:
            changes["deadline"] = float(env["FEATURES_GQL_DEADLINE_SECONDS"])
        except ValueError:
            raise ConfigError("FEATURES_GQL_DEADLINE_SECONDS must be a number") from None
    if "FEATURES_GQL_SLOW_REQUEST_MS" in env:
        try:
            changes["slow_request_ms"] = float(env["FEATURES_GQL_SLOW_REQUEST_MS"])
        except ValueError:
            raise ConfigError("FEATURES_GQL_SLOW_REQUEST_MS must be a number") from None
    if "FEATURES_GQL_LOG_FORMAT" in env:
        changes["log_format"] = env["FEATURES_GQL_LOG_FORMAT"]
    if "FEATURES_GQL_LOG_LEVEL" in env:
        changes["log_level"] = env["FEATURES_GQL_LOG_LEVEL"]
    if "FEATURES_GQL_INTROSPECTION" in env:
        changes["introspection"] = _bool(
            env["FEATURES_GQL_INTROSPECTION"], "FEATURES_GQL_INTROSPECTION"
        )
    if "FEATURES_GQL_PLUGINS_DIR" in env:
        changes["plugins_dir"] = Path(env["FEATURES_GQL_PLUGINS_DIR"])
    if "FEATURES_GQL_ANONYMOUS" in env:
        changes["anonymous"] = env["FEATURES_GQL_ANONYMOUS"]
    if "FEATURES_GQL_CATALOG_STRICT" in env:
        changes["catalog_strict"] = _bool(
            env["FEATURES_GQL_CATALOG_STRICT"], "FEATURES_GQL_CATALOG_STRICT"
        )
    if env.get("FEATURES_GQL_ADMIN_TOKEN"):
        changes["admin_token"] = env["FEATURES_GQL_ADMIN_TOKEN"]
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
