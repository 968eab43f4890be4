"""Settings: defaults < TOML < environment < command line, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from features_gql.bootstrap import build
from features_gql.config import Settings, load_settings
from features_gql.errors import ConfigError
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
        ("[server]\nport = 'x'\n", "[server] port has the wrong type"),
        ("[server]\nintrospection = 1\n", "[server] introspection has the wrong type"),
        ("[sever]\n", "unknown table(s) sever"),
        ("[logging]\nformat = 'xml'\n", "log format must be one of console, json"),
        ("not toml = = =", "is not valid TOML"),
        ("[store]\npath = 'x.db'\n", 'needs plugin = "<name>"'),
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
        ({"FEATURES_GQL_PORT": "eighty"}, "FEATURES_GQL_PORT must be a number"),
        ({"FEATURES_GQL_INTROSPECTION": "maybe"}, "must be true or false"),
        ({"FEATURES_GQL_STOER": "memory"}, "unknown environment variable(s) FEATURES_GQL_STOER"),
        ({"FEATURES_GQL_DEADLINE_SECONDS": "0"}, "deadline must be a positive number"),
    ],
)
def test_bad_environment_is_explained(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert message in str(caught.value)


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
