"""The README's configuration table, made from the settings' declarations.

``python -m features_gql.settings_table`` rewrites the table in README.md, between its
markers; ``--check`` only says whether it is up to date, as ``tests/test_docs.py`` does.
Change a setting in ``features_gql/config.py``, never in the README.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from features_gql.config import SETTINGS
from features_gql.declarations import BOOLEAN, Composite, Declared
from features_gql.rate_limits import Rate

START = "<!-- settings-table:start: made by `python -m features_gql.settings_table` -->"
END = "<!-- settings-table:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"
HEADER = ("option", "environment", "TOML", "default")

#: Rows for what is not one setting, each after the setting it follows.
EXTRA_ROWS: dict[str, tuple[str, str, str, str]] = {
    "store": (
        "`--fault KEY=VALUE`, `--latency KEY=VALUE`",
        "",
        '`[store] plugin = "failing"` / `"slow"`',
        "off; see [Fault injection](#fault-injection)",
    ),
}


def _option(each: Declared) -> str:
    spec = each.spec
    if spec.option_doc is not None:
        return spec.option_doc
    if spec.option is None:
        return ""
    return f"`{spec.option} {spec.metavar}`" if spec.metavar else f"`{spec.option}`"


def _environment(each: Declared) -> str:
    spec = each.spec
    if spec.env is None:
        return ""
    # A switch that is on by default is set to turn it off.
    name = f"{spec.env}=false" if spec.kind is BOOLEAN and each.default is True else spec.env
    return " ".join(filter(None, (f"`{name}`", spec.kind.env_note)))


def _toml(each: Declared) -> str:
    toml = each.spec.toml
    if toml is None:
        return ""
    if isinstance(toml, Composite):
        if toml.doc is not None:
            return toml.doc
        if toml.keys is None:
            return f"`[{toml.table}]` table"
        return ", ".join(f"`[{toml.table}] {key}`" for key in toml.keys)
    table, _, key = toml.partition(".")
    return " ".join(filter(None, (f"`[{table}] {key}`", each.spec.kind.toml_note)))


def _default(each: Declared) -> str:
    if each.spec.default_doc is not None:
        return each.spec.default_doc
    value = each.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, Rate):
        return f"`{value.rate:g}/{value.burst:g}`"
    return f"`{value}`"


def _row(cells: Sequence[str]) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def table() -> str:
    """The configuration table, in Markdown."""
    rows = [_row(HEADER), _row(["---"] * len(HEADER))]
    for each in SETTINGS:
        rows.append(_row([_option(each), _environment(each), _toml(each), _default(each)]))
        if each.name in EXTRA_ROWS:
            rows.append(_row(EXTRA_ROWS[each.name]))
    return "\n".join(rows) + "\n"


def update(readme: str) -> str:
    """The README with its configuration table made anew."""
    before, start, rest = readme.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the README has no {START} ... {END} markers")
    return f"{before}{START}\n\n{table()}\n{END}{after}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features_gql.settings_table",
        description="Write the settings table into the README (between its markers).",
    )
    parser.add_argument("readme", nargs="?", type=Path, default=README)
    parser.add_argument(
        "--check", action="store_true", help="only say whether the table is up to date"
    )
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    made = update(text)
    if made == text:
        return 0
    if args.check:
        print(
            f"{args.readme}: the settings table is out of date; "
            "run python -m features_gql.settings_table",
            file=sys.stderr,
        )
        return 1
    args.readme.write_text(made, encoding="utf-8")
    print(f"wrote the settings table in {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
