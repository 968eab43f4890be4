"""The ``features-gql`` command: serve, plugins, token, export-schema, import, export."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from features_gql import __version__
from features_gql.config import CONFIG_FILE, ENVIRONMENT, SETTINGS, TOML_KEYS, load_settings
from features_gql.declarations import Commands, OneOf
from features_gql.errors import ConfigError, FeaturesError


def _listed(label: str, text: str, column: int) -> str:
    """``text`` beside ``label``, wrapped in its column."""
    return textwrap.fill(
        text,
        width=88,
        initial_indent=f"  {label:<{column - 3}} ",
        subsequent_indent=" " * column,
    )


def _settings_help() -> str:
    """Every setting that is not an option: environment variables, config file, admin."""
    env = "\n".join(_listed(name, var.meaning, 40) for name, var in ENVIRONMENT.items())
    tables = "\n".join(
        _listed(f"[{section}]", ", ".join(keys), 16) for section, keys in TOML_KEYS.items()
    )
    store = _listed(
        "[store]",
        'plugin = "<name>" and that store\'s options (`features-gql plugins` lists the '
        "stores); a wrapper store holds its inner one in [store.inner]",
        16,
    )
    return (
        "environment variables (an option wins over them, and they over the config file):\n"
        f"{env}\n\n"
        "config file (--config or FEATURES_GQL_CONFIG; TOML), its tables and keys:\n"
        f"{tables}\n{store}\n\n"
        "admin endpoint (/admin/faults): refused until a bearer token of 16 or more characters\n"
        "is set with FEATURES_GQL_ADMIN_TOKEN or [server] admin_token.\n"
        "README.md explains every setting; docs/ has MongoDB and fault injection."
    )


def _add_settings(parser: argparse.ArgumentParser, *commands: Commands) -> None:
    """The options of the settings these commands offer (declared in ``Settings``)."""
    for each in SETTINGS:
        spec = each.spec
        if spec.option is None or spec.commands not in commands:
            continue
        if each.switch_off:
            parser.add_argument(
                spec.option,
                dest=each.name,
                action="store_const",
                const=False,
                help=f"do not {spec.help}",
            )
            continue
        options: dict[str, Any] = {}
        if spec.kind.argument is not None:
            options["type"] = spec.kind.argument
        if isinstance(spec.check, OneOf) and not spec.check.upper:
            options["choices"] = spec.check.choices  # argparse shows them as the metavar
        else:
            options["metavar"] = spec.metavar or spec.option[2:].replace("-", "_").upper()
        shown = _shown_default(each.default)
        parser.add_argument(
            spec.option,
            dest=each.name,
            help=spec.help if shown is None else f"{spec.help} (default {shown})",
            **options,
        )


def _shown_default(value: object) -> str | None:
    """A default simple enough to show in an option's help."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    return None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as options."""
    return {each.name: getattr(args, each.name, None) for each in SETTINGS}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="features-gql",
        description="Attach any feature to any resource, and ask for it over GraphQL.",
        epilog="`features-gql serve --help` lists the options, environment variables and "
        "config file keys.",
    )
    parser.add_argument("--version", action="version", version=f"features-gql {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the GraphQL service",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_settings(serve, "serve", "store", "all")
    serve.add_argument(
        "--fault",
        action="append",
        metavar="KEY=VALUE",
        help="fault injection: wrap the store in a `failing` store with this option "
        "(repeatable; TOML values): error_rate=0.2 seed=7 every_nth=5 operations=writes "
        "concurrent_writes=true outage_seconds=30 (docs/fault-injection.md)",
    )
    serve.add_argument(
        "--latency",
        action="append",
        metavar="KEY=VALUE",
        help="fault injection: wrap the store in a `slow` store with this option "
        "(repeatable): delay_ms=30 jitter_ms=20 seed=7 operations=reads stall=true",
    )

    plugins = commands.add_parser(
        "plugins",
        help="list discovered plugins and what they provide",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_settings(plugins, "all")

    token = commands.add_parser("token", help="make bearer tokens for [auth.tokens]")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser(
        "create",
        help="print a new random secret once, and the TOML table (with only its hash) to paste",
    )
    create.add_argument("name", help="the token's name, recorded as the actor of its changes")
    create.add_argument(
        "--scopes",
        default="read",
        help="comma-separated: read (queries), write (mutations), admin (operator endpoints); "
        "default read",
    )

    export = commands.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")

    load = commands.add_parser(
        "import",
        help="read definitions and assignments (JSON Lines) into the store",
        description="Read JSON Lines into the configured store: one object per line, "
        '{"type": ..., "id": ..., "feature": ...} or {"definition": {"name": ..., ...}}. '
        "Batched, idempotent, every change logged; a bad line stops the import, with "
        "everything before it applied. A progress bar shows on a terminal.",
    )
    load.add_argument("path", help="the file to read, or - for standard input")
    _store_options(load)
    load.add_argument(
        "--batch", type=int, default=10_000, help="assignments per store call (default 10000)"
    )
    load.add_argument(
        "--actor", default="import", help="the actor recorded for its changes (default import)"
    )
    dump = commands.add_parser(
        "export",
        help="write every definition and assignment as JSON Lines",
        description="Write the store's definitions (ordered by name), then its assignments "
        "(ordered by type, id, feature), in the format import reads.",
    )
    _store_options(dump)
    dump.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    return parser


def _store_options(parser: argparse.ArgumentParser) -> None:
    _add_settings(parser, "store", "all")
    # The deadline of a whole batch, rather than serve's of one call.
    parser.add_argument(
        "--deadline",
        type=float,
        default=60.0,
        help="seconds each store call (a whole batch) may take (default 60)",
    )


def _settings(args: argparse.Namespace) -> Any:
    overrides = _overrides(args)
    settings = load_settings(config_file=overrides.pop(CONFIG_FILE), overrides=overrides)
    fault, latency = getattr(args, "fault", None), getattr(args, "latency", None)
    if fault or latency:
        from features_gql.faults import wrap_store

        store = wrap_store(settings.store, fault=fault, latency=latency)
        settings = dataclasses.replace(settings, store=store)
    return settings


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One /metrics for all workers: prometheus-client's multiprocess mode, which must
        # be chosen before it is first imported (by the serving module, just below).
        with tempfile.TemporaryDirectory(prefix="features-gql-metrics-") as shared:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
            try:
                from features_gql.serving import serve

                return serve(settings)
            finally:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    from features_gql.serving import serve

    return serve(settings)


def _plugins(args: argparse.Namespace) -> int:
    from features_gql.plugin_manager import collect, create_plugin_manager, describe

    settings = _settings(args)
    plugins = collect(create_plugin_manager(settings.plugins_dir))
    for info in describe(plugins):
        print(f"{info.name}  ({info.version or 'local'})")
        print(f"  hooks:   {', '.join(info.hooks) or '-'}")
        for store in info.stores:
            entry = plugins.stores.get(store)
            url_schemes = plugins.stores.url_schemes(store)
            schemes = f" [{', '.join(s + '://' for s in url_schemes)}]" if url_schemes else ""
            print(f"  store:   {store}{schemes} - {entry.description}")
        for name in info.loggers:
            print(f"  logger:  {name} - {plugins.loggers.get(name).description}")
    return 0


def _export_schema(args: argparse.Namespace) -> int:
    from features_gql.graphql.schema import schema_sdl

    sdl = schema_sdl()
    if args.output is None:
        sys.stdout.write(sdl)
    else:
        args.output.write_text(sdl, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _token(args: argparse.Namespace) -> int:
    from features_gql.auth import Token, new_secret, token_table

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    secret = new_secret()
    table = token_table(args.name, scopes, secret)
    # Parse what we print, so a bad name or scope fails here and not at the next start.
    Token.from_config(args.name, scopes, table.rsplit('"', 2)[-2])
    print(
        f"secret (shown once; give it to the client as Authorization: Bearer <secret>):\n"
        f"  {secret}\n\nadd to the config file:\n\n{table}",
        end="",
    )
    return 0


def _transfer_service(args: argparse.Namespace) -> Any:
    from features_gql.bootstrap import build

    # No operation logs: the command reports on its own.
    settings = dataclasses.replace(_settings(args), loggers=())
    service = build(settings)
    if not service.store.supports_catalog:
        raise ConfigError(f"the {service.store.name} store cannot import or export (no catalog)")
    return service


def _import(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import time

    from features_gql.errors import StoreError
    from features_gql.transfer import Importer, ImportStopped, ProgressBar

    if not 1 <= args.batch <= 10_000:
        raise ConfigError(f"--batch must be between 1 and 10000, got {args.batch}")
    service = _transfer_service(args)
    source = sys.stdin.buffer if args.path == "-" else open(args.path, "rb")  # noqa: SIM115
    total = os.fstat(source.fileno()).st_size if args.path != "-" else None
    bar = ProgressBar(sys.stderr.write, total) if sys.stderr.isatty() else None
    newline = "\n" if bar is not None else ""  # below the progress bar
    importer = Importer(service.api, actor=args.actor, batch=args.batch, on_progress=bar)
    started = time.perf_counter()

    async def run() -> int:
        await service.start()
        try:
            await importer.run(source)
        except ImportStopped as stopped:
            print(f"{newline}features-gql: error: {stopped}", file=sys.stderr)
            return 1
        except StoreError as exc:
            got = importer.progress.applied_through
            print(
                f"{newline}features-gql: error: the store failed ({exc}); "
                f"lines 1-{got} were imported",
                file=sys.stderr,
            )
            return 1
        finally:
            await service.stop()
            source.close()
        if bar is not None:
            bar(importer.progress, final=True)
        seconds = time.perf_counter() - started
        done = importer.progress
        print(
            f"imported {done.lines:,} lines: {done.assignments:,} assignments, "
            f"{done.definitions:,} definitions, {done.changed:,} changes in {seconds:.1f} s "
            f"({done.assignments / max(seconds, 1e-9):,.0f} assignments/s)",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(run())


def _export(args: argparse.Namespace) -> int:
    import asyncio

    from features_gql.transfer import export_lines

    service = _transfer_service(args)
    out = sys.stdout.buffer if args.output is None else open(args.output, "wb")  # noqa: SIM115

    async def run() -> int:
        await service.start()
        try:
            async for chunk in export_lines(service.api):
                out.write(chunk)
        finally:
            await service.stop()
            out.flush()
            if args.output is not None:
                out.close()
        return 0

    return asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {
        "serve": _serve,
        "plugins": _plugins,
        "export-schema": _export_schema,
        "token": _token,
        "import": _import,
        "export": _export,
    }
    try:
        return commands[args.command](args)
    except FeaturesError as exc:
        # Configuration errors, a port that is taken, a store that cannot be opened: one
        # line that says what is wrong, no traceback.
        print(f"features-gql: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.command in ("import", "export"):
            print(f"features-gql: error: {exc}", file=sys.stderr)
            return 2
        if args.command != "serve":
            raise
        # Most often the port is taken or the address is not this machine's.
        print(f"features-gql: error: cannot serve: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
