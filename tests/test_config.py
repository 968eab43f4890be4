"""Settings: defaults < TOML < environment < command line, and clear errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from features_gql.bootstrap import build
from features_gql.config import CONFIG_FILE, ENVIRONMENT, SETTINGS, Settings, load_settings
from features_gql.declarations import Declared
from features_gql.errors import ConfigError
from features_gql.rate_limits import Rate, RateLimits
from features_gql_plugins.sqlite_store import SQLiteStore, default_path, path_from_url

TOML = """
[server]
host = "0.0.0.0"
port = 9000
deadline_seconds = 0.5
introspection = false

[logging]
format = "json"
level = "debug"

[store]
plugin = "sqlite"
path = "/tmp/from-toml.db"
synchronous = "full"
"""


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.store is None
    assert settings.deadline == 2.0


def test_toml_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "features.toml"
    config.write_text(TOML)
    settings = load_settings(config_file=config, env={})
    assert (settings.host, settings.port, settings.deadline) == ("0.0.0.0", 9000, 0.5)
    assert (settings.log_format, settings.log_level, settings.introspection) == (
        "json",
        "DEBUG",
        False,
    )
    assert settings.store == {
        "plugin": "sqlite",
        "path": "/tmp/from-toml.db",
        "synchronous": "full",
    }

    env = {
        "FEATURES_GQL_CONFIG": str(config),
        "FEATURES_GQL_PORT": "9100",
        "FEATURES_GQL_STORE": "memory",
    }
    settings = load_settings(env=env)
    assert (settings.port, settings.store, settings.host) == (9100, "memory", "0.0.0.0")

    settings = load_settings(env=env, overrides={"port": 9200, "store": None})
    assert (settings.port, settings.store) == (9200, "memory")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key(s) 'prot'"),
        (
            "[server]\nport = 'eighteen'\n",
            "[server] port has the wrong type: it must be an integer",
        ),
        (
            "[server]\nintrospection = 1\n",
            "[server] introspection has the wrong type: it must be true",
        ),
        (
            "[server]\ndeadline_seconds = '2s'\n",
            "deadline_seconds has the wrong type: it must be a number",
        ),
        ("[sever]\n", "unknown table(s) sever"),
        ("[logging]\nformat = 'xml'\n", "log format must be one of console, json"),
        ("not toml = = =", "is not valid TOML"),
        ("[store]\npath = 'x.db'\n", 'needs plugin = "<name>"'),
        ("[server]\ncors_origins = 'https://a.example'\n", "cors_origins has the wrong type"),
        ("[server]\ncors_origins = [1]\n", "cors_origins must be a list of strings"),
        ("[server]\ncors_origins = ['https://a.example/app']\n", "must be scheme://host[:port]"),
        ("[server]\ncors_origins = ['a.example']\n", "must be scheme://host[:port]"),
        ("[server]\nmax_connections = 0\n", "max connections must be at least 1"),
        ("[server]\nmax_connections = 1.5\n", "max_connections has the wrong type"),
        ("[server]\nheader_timeout_seconds = 0\n", "header timeout must be a positive"),
        ("[server]\nmax_unproven_per_address = 0\n", "max_unproven_per_address must be at"),
        ("[server]\nmax_bodies_per_principal = 2.5\n", "max_bodies_per_principal has the wrong"),
        ("server = 1\n", "[server] must be a table"),
        ("store = 'memory'\n", '[store] must be a table with plugin = "<name>"'),
        ("[auth]\ntokens = 1\n", "[auth] tokens has the wrong type: it must be a table"),
        ("[auth.tokens.ci]\nscopes = 'read'\n", "[auth.tokens.ci] scopes has the wrong type"),
        ("[logging]\nloggers = ['loguru', 1]\n", "[logging] loggers must be a list of strings"),
        ("[catalog]\nstrict = 'yes'\n", "[catalog] strict has the wrong type"),
        ("[limits]\nmax_depth = 0\n", "[limits] max_depth must be a positive whole number"),
        ("[upstream]\nmax_staleness_seconds = 0\n", "max_staleness must be positive"),
    ],
)
def test_bad_toml_is_explained(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        build(load_settings(config_file=config, env={}))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEATURES_GQL_PORT": "eighty"}, "FEATURES_GQL_PORT must be an integer, got 'eighty'"),
        ({"FEATURES_GQL_WORKERS": "2.5"}, "FEATURES_GQL_WORKERS must be an integer, got '2.5'"),
        ({"FEATURES_GQL_SLOW_REQUEST_MS": "fast"}, "FEATURES_GQL_SLOW_REQUEST_MS must be a number"),
        ({"FEATURES_GQL_INTROSPECTION": "maybe"}, "must be true or false"),
        ({"FEATURES_GQL_STOER": "memory"}, "unknown environment variable(s) FEATURES_GQL_STOER"),
        ({"FEATURES_GQL_DEADLINE_SECONDS": "0"}, "deadline must be a positive number"),
        ({"FEATURES_GQL_DEADLINE_SECONDS": "nan"}, "deadline must be a positive number"),
        ({"FEATURES_GQL_PORT": "-1"}, "port must be between 0 and 65535, got -1"),
        ({"FEATURES_GQL_WORKERS": "65"}, "workers must be between 1 and 64, got 65"),
        ({"FEATURES_GQL_SLOW_REQUEST_MS": "-1"}, "slow request threshold must be >= 0 ms"),
        ({"FEATURES_GQL_LOG_LEVEL": "loud"}, "log level must be one of TRACE, DEBUG"),
        ({"FEATURES_GQL_ADMIN_TOKEN": "short"}, "the admin token must be at least 16"),
        (
            {"FEATURES_GQL_MAX_CONNECTIONS": "many"},
            "FEATURES_GQL_MAX_CONNECTIONS must be an integer",
        ),
        ({"FEATURES_GQL_HEADER_TIMEOUT_SECONDS": "-1"}, "header timeout must be a positive"),
        ({"FEATURES_GQL_RATE_LIMIT_PER_TOKEN": "fast"}, "must be RATE or RATE/BURST"),
        ({"FEATURES_GQL_RATE_LIMIT_PER_TOKEN": "-5"}, "must be zero or positive"),
        ({"FEATURES_GQL_RATE_LIMIT_PER_ADDRESS": "10/0"}, "the burst must be positive"),
        ({"FEATURES_GQL_RATE_LIMIT_PARSE_SECONDS": "nan"}, "must be zero or positive"),
        ({"FEATURES_GQL_MAX_UNPROVEN_CONNECTIONS": "0"}, "max_unproven_connections must be at"),
        ({"FEATURES_GQL_CORS_ORIGINS": "https://a.example,ftp://b"}, "'ftp://b' must be"),
    ],
)
def test_bad_environment_is_explained(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert message in str(caught.value)


def test_connection_and_cors_settings_from_toml_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "features.toml"
    config.write_text(
        "[server]\n"
        'cors_origins = ["https://App.example.com/", "http://localhost:5173", "http://[::1]:3000"]\n'
        "max_connections = 500\n"
        "header_timeout_seconds = 5\n"
        "max_unproven_connections = 100\n"
        "max_unproven_per_address = 8\n"
        "max_bodies_per_principal = 4\n"
    )
    settings = load_settings(config_file=config, env={})
    # Browsers send origins in lower case and without a trailing slash.
    assert settings.cors_origins == (
        "https://app.example.com",
        "http://localhost:5173",
        "http://[::1]:3000",
    )
    assert (settings.max_connections, settings.header_timeout) == (500, 5.0)
    assert (
        settings.max_unproven_connections,
        settings.max_unproven_per_address,
        settings.max_bodies_per_principal,
    ) == (100, 8, 4)

    settings = load_settings(
        config_file=config,
        env={
            "FEATURES_GQL_CORS_ORIGINS": "https://a.example, https://b.example:8443,",
            "FEATURES_GQL_MAX_CONNECTIONS": "64",
            "FEATURES_GQL_HEADER_TIMEOUT_SECONDS": "2.5",
        },
    )
    assert settings.cors_origins == ("https://a.example", "https://b.example:8443")
    assert (settings.max_connections, settings.header_timeout) == (64, 2.5)
    assert load_settings(env={"FEATURES_GQL_CORS_ORIGINS": ""}).cors_origins == ()


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=Path("/nope/features.toml"), env={})


def test_store_specs() -> None:
    service = build(Settings(store="sqlite:///tmp/abs/f.db", loggers=()))
    assert isinstance(service.store, SQLiteStore)
    assert service.store.path == "/tmp/abs/f.db"
    assert path_from_url("sqlite://relative/f.db") == "relative/f.db"
    with pytest.raises(ConfigError, match="names no file"):
        path_from_url("sqlite://")


def test_default_store_is_a_sqlite_file_in_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "features-gql" / "features.db"
    service = build(Settings(loggers=()))
    assert isinstance(service.store, SQLiteStore)
    assert service.store.path == str(tmp_path / "features-gql" / "features.db")


def test_store_option_types_are_checked() -> None:
    with pytest.raises(ConfigError, match="'busy_timeout_ms' of store 'sqlite' must be an integer"):
        build(Settings(store={"plugin": "sqlite", "busy_timeout_ms": "soon"}, loggers=()))
    with pytest.raises(ConfigError, match="synchronous must be one of normal, full, extra"):
        build(Settings(store={"plugin": "sqlite", "synchronous": "off"}, loggers=()))


def test_unknown_logger_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown logger plugin 'syslog'; available: .*loguru"):
        build(Settings(store="memory", loggers=("syslog",)))


def test_store_descriptions_say_where_the_data_is_and_hide_passwords(tmp_path: Path) -> None:
    from features_gql.stores import redact_url

    assert redact_url("mongodb://app:s3cret@db:27017/flags") == "mongodb://app:***@db:27017/flags"
    assert redact_url("mongodb+srv://db.example/flags") == "mongodb+srv://db.example/flags"
    service = build(
        Settings(
            store={
                "plugin": "failing",
                "error_rate": 0.1,
                "inner": {"plugin": "mongodb", "url": "mongodb://app:s3cret@db:27017/flags"},
            },
            loggers=(),
        )
    )
    assert (
        service.store_description
        == "failing over mongodb mongodb://app:***@db:27017/flags, database flags"
    )
    sqlite = build(Settings(store=f"sqlite://{tmp_path}/f.db", loggers=()))
    assert sqlite.store_description == f"sqlite file {tmp_path}/f.db"


#: A valid value for each environment variable, and the setting it must produce.
ENVIRONMENT_SAMPLES: dict[str, tuple[str, str, object]] = {
    "FEATURES_GQL_CORS_ORIGINS": ("https://a.example", "cors_origins", ("https://a.example",)),
    "FEATURES_GQL_MAX_CONNECTIONS": ("64", "max_connections", 64),
    "FEATURES_GQL_HEADER_TIMEOUT_SECONDS": ("2.5", "header_timeout", 2.5),
    "FEATURES_GQL_RATE_LIMIT_PER_TOKEN": ("100/150", "token_rate", Rate(100, 150)),
    "FEATURES_GQL_RATE_LIMIT_PER_ADDRESS": ("50", "address_rate", Rate(50, 100)),
    "FEATURES_GQL_RATE_LIMIT_PARSE_SECONDS": ("0", "parse_rate", Rate(0, 0)),
    "FEATURES_GQL_MAX_UNPROVEN_CONNECTIONS": ("100", "max_unproven_connections", 100),
    "FEATURES_GQL_MAX_UNPROVEN_PER_ADDRESS": ("8", "max_unproven_per_address", 8),
    "FEATURES_GQL_MAX_BODIES_PER_PRINCIPAL": ("4", "max_bodies_per_principal", 4),
    "FEATURES_GQL_GRAPHIQL": ("false", "graphiql", False),
    "FEATURES_GQL_UI": ("false", "ui", False),
    "FEATURES_GQL_ANONYMOUS": ("read", "anonymous", "read"),
    "FEATURES_GQL_HOST": ("0.0.0.0", "host", "0.0.0.0"),
    "FEATURES_GQL_PORT": ("9100", "port", 9100),
    "FEATURES_GQL_STORE": ("memory", "store", "memory"),
    "FEATURES_GQL_DEADLINE_SECONDS": ("0.25", "deadline", 0.25),
    "FEATURES_GQL_WORKERS": ("3", "workers", 3),
    "FEATURES_GQL_SLOW_REQUEST_MS": ("12.5", "slow_request_ms", 12.5),
    "FEATURES_GQL_LOG_FORMAT": ("json", "log_format", "json"),
    "FEATURES_GQL_LOG_LEVEL": ("debug", "log_level", "DEBUG"),
    "FEATURES_GQL_INTROSPECTION": ("off", "introspection", False),
    "FEATURES_GQL_PLUGINS_DIR": ("/opt/plugins", "plugins_dir", Path("/opt/plugins")),
    "FEATURES_GQL_ADMIN_TOKEN": ("0123456789abcdef", "admin_token", "0123456789abcdef"),
    "FEATURES_GQL_RETAIN_CHANGES": ("100", "retain_changes", 100),
    "FEATURES_GQL_UPSTREAM": (
        "http://central:8080/graphql",
        "upstream",
        "http://central:8080/graphql",
    ),
    "FEATURES_GQL_UPSTREAM_TOKEN": ("fgql_edge", "upstream_token", "fgql_edge"),
    "FEATURES_GQL_MAX_STALENESS": ("30", "max_staleness", 30.0),
    "FEATURES_GQL_CATALOG_STRICT": ("true", "catalog_strict", True),
}


@pytest.mark.parametrize("name", [n for n, v in ENVIRONMENT.items() if v.setting is not None])
def test_every_environment_variable_sets_its_setting(name: str) -> None:
    value, setting, expected = ENVIRONMENT_SAMPLES[name]
    assert getattr(load_settings(env={name: value}), setting) == expected
    assert getattr(load_settings(env={}), setting) != expected


def test_an_empty_admin_token_leaves_admin_disabled() -> None:
    assert load_settings(env={"FEATURES_GQL_ADMIN_TOKEN": ""}).admin_token is None


def test_edge_and_retention_settings_from_toml_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        '[server]\nretain_changes = 1000\n[upstream]\nurl = "http://central:8080/graphql"\n'
        'max_staleness_seconds = 300\nstate_file = "state/edge.json"\n'
    )
    settings = load_settings(config_file=config, env={"FEATURES_GQL_UPSTREAM_TOKEN": "fgql_x"})
    assert settings.upstream == "http://central:8080/graphql"
    assert settings.upstream_token == "fgql_x"
    assert "fgql_x" not in repr(settings)
    assert settings.max_staleness == 300
    assert settings.upstream_state == tmp_path / "state" / "edge.json"
    assert settings.retain_changes == 1000
    env = {"FEATURES_GQL_RETAIN_CHANGES": "0"}
    with pytest.raises(ConfigError, match="retain_changes must be at least 1"):
        load_settings(env=env)
    config.write_text('[upstream]\nurl = "http://central/graphql"\ntokn = "x"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(config_file=config, env={})


def test_rate_limits_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "limits.toml"
    config.write_text("[rate_limits]\nper_token = 100\nper_address_burst = 7\nparse_seconds = 0\n")
    limits = load_settings(config_file=config, env={}).rate_limits
    assert limits.per_token == Rate(100, 200)  # a burst of twice the rate when not given
    assert limits.per_address == Rate(RateLimits().per_address.rate, 7)
    assert limits.parse_seconds.unlimited
    config.write_text("[rate_limits]\nper_token = -1\n")
    with pytest.raises(ConfigError, match=r"\[rate_limits\] per_token must be zero or positive"):
        load_settings(config_file=config, env={})
    config.write_text("[rate_limits]\nper_tokens = 1\n")
    with pytest.raises(ConfigError, match="per_tokens"):
        load_settings(config_file=config, env={})


def test_every_setting_is_declared_once() -> None:
    """Every field of Settings is a declared setting; no two share a variable or option."""
    assert [each.name for each in SETTINGS] == [f.name for f in dataclasses.fields(Settings)]
    defaults = Settings()
    for each in SETTINGS:
        assert getattr(defaults, each.name) == each.default, each.name
    for attribute in ("env", "option"):
        given = [getattr(each.spec, attribute) for each in SETTINGS]
        given = [value for value in given if value is not None]
        assert len(given) == len(set(given)), attribute


OPTIONS = [each for each in SETTINGS if each.spec.option and each.name != CONFIG_FILE]


@pytest.mark.parametrize("each", OPTIONS, ids=[each.spec.option for each in OPTIONS])
def test_every_option_of_serve_sets_its_setting(
    each: Declared, monkeypatch: pytest.MonkeyPatch
) -> None:
    from features_gql.cli import _parser, _settings

    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert each.spec.option is not None
    assert each.spec.env is not None
    if each.switch_off:
        argv, expected = [each.spec.option], False
    else:
        value, _, expected = ENVIRONMENT_SAMPLES[each.spec.env]
        argv = [each.spec.option, value]
    settings = _settings(_parser().parse_args(["serve", *argv]))
    assert getattr(settings, each.name) == expected
    assert getattr(Settings(), each.name) != expected


def test_the_config_file_option_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from features_gql.cli import _parser, _settings

    config = tmp_path / "features.toml"
    config.write_text("[server]\nport = 9300\n[catalog]\nstrict = true\n")
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    settings = _settings(_parser().parse_args(["plugins", "--config", str(config)]))
    assert (settings.port, settings.catalog_strict, settings.config_file) == (9300, True, config)
    monkeypatch.setenv("FEATURES_GQL_CONFIG", str(config))
    assert _settings(_parser().parse_args(["serve"])).port == 9300


def test_paths_in_the_config_file_are_relative_to_it(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "features.toml"
    config.parent.mkdir()
    config.write_text('[plugins]\ndirectory = "plugins"\n')
    settings = load_settings(config_file=config, env={})
    assert settings.plugins_dir == tmp_path / "etc" / "plugins"
    settings = load_settings(config_file=config, env={"FEATURES_GQL_PLUGINS_DIR": "here"})
    assert settings.plugins_dir == Path("here")


def test_the_settings_do_not_import_the_graphql_adapter() -> None:
    """Store plugins import the settings (through features_gql.faults); graphql-core and
    Strawberry are the GraphQL adapter's, loaded only by what serves GraphQL."""
    code = (
        "import sys, features_gql.config, features_gql_plugins.failing_store\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('graphql', 'strawberry')"
        " or m.startswith('features_gql.graphql'))\n"
        "assert not loaded, loaded\n"
        "from features_gql.graphql.admission import Limits\n"
        "from features_gql.limits import Limits as Same\n"
        "assert Limits is Same\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_declaration_arguments_are_the_specs_fields() -> None:
    from features_gql.declarations import Spec, _SpecArguments

    assert set(_SpecArguments.__annotations__) == {
        f.name for f in dataclasses.fields(Spec) if f.name != "help"
    }
