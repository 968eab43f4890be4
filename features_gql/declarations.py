"""How a setting is declared: once, as a field of :class:`features_gql.config.Settings`.

A field's :func:`setting` says everything about it: its type and default (the field's own),
its :class:`Kind` (how its environment variable is read and which TOML values its key
takes), its environment variable, its TOML key, its command-line option, its bounds and
its help texts. Everything else is derived from these declarations:

- the environment reader, the TOML loader and the bounds checks (``features_gql.config``);
- the options of ``features-gql serve`` and its ``--help`` (``features_gql.cli``);
- the README's configuration table (``features_gql.settings_table``, checked by
  ``tests/test_docs.py``).

A setting that is not one TOML key (a rate and its burst, the ``[limits]`` table, the
``[store]`` table) declares a :class:`Composite`: the keys it reads and how they make its
value.

This is a small table of our own rather than pydantic-settings. Measured on the
development machine (Python 3.11, ``python -X importtime``): importing pydantic-settings
2.14 takes 115-160 ms (about 180 ms of wall time in a fresh process) and would add
pydantic and its compiled core to every install, where reading the settings takes about
1 ms today. It also offers none of what the settings need beyond reading values: TOML
keys named apart from their fields (``[server] header_timeout_seconds``), a rate and its
burst as two keys but one variable, relative paths in the config file, error messages
that name the key or variable, the CLI's existing flags and a README table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar, Unpack

from features_gql.errors import ConfigError

T = TypeVar("T")

#: Reads an environment variable's text, or says what is wrong with it; the second
#: argument is the variable's name.
Parse = Callable[[str, str], Any]
#: A value from the config file: the TOML value, the key it came from (``[server] port``)
#: and the config file's directory.
FromToml = Callable[[Any, str, Path], Any]
#: Checks (and may normalize) a setting's value; the second argument is its field name.
Check = Callable[[Any, str], Any]
#: The commands that offer a setting's option: ``serve`` only, the commands that open the
#: store (``serve``, ``import``, ``export``), or every command that reads the settings.
Commands = Literal["serve", "store", "all"]


def _text(value: str, name: str) -> str:
    return value


def _optional_text(value: str, name: str) -> str | None:
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


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _path(value: str, name: str) -> Path:
    return Path(value)


def _texts(value: str, name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _as_is(value: Any, where: str, directory: Path) -> Any:
    return value


def _as_float(value: Any, where: str, directory: Path) -> float:
    return float(value)


def _relative_path(value: Any, where: str, directory: Path) -> Path:
    """A path in the config file is relative to the file's directory."""
    return (directory / str(value)).resolve()


def _text_list(value: Any, where: str, directory: Path) -> tuple[str, ...]:
    if not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Kind:
    """What a setting's values look like in each place they come from."""

    #: How a value of this kind is named in errors: "an integer".
    name: str
    #: The TOML types its key takes (a boolean is never taken for an integer).
    toml_types: tuple[type, ...]
    #: Reads its environment variable.
    parse: Parse = _text
    #: Makes the setting's value from its key's TOML value.
    from_toml: FromToml = _as_is
    #: argparse's ``type`` for its option (None: the text as given).
    argument: Callable[[str], Any] | None = None
    #: What the README's table says after the variable, and after the key.
    env_note: str = ""
    toml_note: str = ""

    def accepts(self, value: Any) -> bool:
        """Whether a TOML value has one of this kind's types."""
        if isinstance(value, bool) and bool not in self.toml_types:
            return False
        return isinstance(value, self.toml_types)


TEXT = Kind("a string", (str,))
#: Text whose variable, set but empty, leaves the setting unset.
OPTIONAL_TEXT = Kind("a string", (str,), _optional_text)
INTEGER = Kind("an integer", (int,), _integer, argument=int)
NUMBER = Kind("a number", (int, float), _number, _as_float, argument=float)
BOOLEAN = Kind("true or false", (bool,), _bool)
#: A path; in the config file, relative to the file's directory.
PATH = Kind("a string", (str,), _path, _relative_path, argument=Path)
#: Comma-separated in its variable, a list of strings in the config file.
TEXTS = Kind(
    "a list",
    (list,),
    _texts,
    _text_list,
    env_note="(comma-separated)",
    toml_note="(a list)",
)
#: A TOML table of tables (``[auth.tokens.NAME]``); there is no variable of this kind.
TABLES = Kind("a table", (dict,))


@dataclass(frozen=True)
class Composite:
    """A setting made from several keys of one TOML table, or from a whole table.

    The escape hatch for what is not one key: a rate and its burst, the ``[limits]``
    table, the ``[store]`` table (a store plugin's own options)."""

    table: str
    #: The keys it reads, with their kinds; None takes the whole table, whatever its keys.
    keys: Mapping[str, Kind] | None
    #: Makes the setting's value from the keys given (their types already checked), the
    #: value so far (the default, or what the file was loaded over), and the config file's
    #: directory.
    load: Callable[[Mapping[str, Any], Any, Path], Any]
    #: The README table's TOML cell, when listing the keys is not the right text.
    doc: str | None = None


@dataclass(frozen=True)
class Range:
    """Bounds on a number; None (unset) is always within them."""

    minimum: float | None = None
    maximum: float | None = None
    #: The value must be greater than this: 0 for a positive number.
    above: float | None = None
    #: Names the setting in the error (default: its field name).
    label: str | None = None
    #: What the error says the value must be (default: from the bounds).
    must_be: str | None = None

    def __call__(self, value: Any, name: str) -> Any:
        # Written so that NaN is never within the bounds.
        if value is None:
            return value
        if (
            (self.minimum is not None and not value >= self.minimum)
            or (self.maximum is not None and not value <= self.maximum)
            or (self.above is not None and not value > self.above)
        ):
            raise ConfigError(f"{self.label or name} must be {self.describe()}, got {value}")
        return value

    def describe(self) -> str:
        if self.must_be is not None:
            return self.must_be
        if self.minimum is not None and self.maximum is not None:
            return f"between {_bound(self.minimum)} and {_bound(self.maximum)}"
        if self.minimum is not None:
            return f"at least {_bound(self.minimum)}"
        if self.maximum is not None:
            return f"at most {_bound(self.maximum)}"
        return "positive" if self.above == 0 else f"above {_bound(self.above)}"


def _bound(number: float | None) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


@dataclass(frozen=True)
class OneOf:
    """One of a few words; with ``upper``, in any case (and kept in upper case)."""

    choices: tuple[str, ...]
    label: str | None = None
    upper: bool = False

    def __call__(self, value: Any, name: str) -> Any:
        word = value.upper() if self.upper else value
        if word not in self.choices:
            raise ConfigError(
                f"{self.label or name} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        return word


@dataclass(frozen=True)
class Spec:
    """Everything about one setting but its name, type and default (the field's)."""

    #: What it does, in a line: ``serve --help`` shows it for the option and the variable.
    help: str
    kind: Kind = TEXT
    #: Its environment variable, ``FEATURES_GQL_…``.
    env: str | None = None
    #: Its TOML key as ``"table.key"``, or a :class:`Composite`.
    toml: str | Composite | None = None
    #: Its command-line option. ``--no-…`` on a boolean that is true by default turns it off.
    option: str | None = None
    metavar: str | None = None
    commands: Commands = "serve"
    #: Its bounds (:class:`Range`, :class:`OneOf`, or any check).
    check: Check | None = None
    #: The README table's default cell (Markdown); None shows the default value.
    default_doc: str | None = None
    #: The README table's option cell, for a setting made by a command rather than an option.
    option_doc: str | None = None


class _SpecArguments(TypedDict, total=False):
    kind: Kind
    env: str
    toml: str | Composite
    option: str
    metavar: str
    commands: Commands
    check: Check
    default_doc: str
    option_doc: str


#: The key of a field's metadata that holds its :class:`Spec`.
SPEC = "features_gql.setting"


def setting(
    default: T,
    help: str,
    *,
    secret: bool = False,
    compare: bool = True,
    **spec: Unpack[_SpecArguments],
) -> T:
    """A field of the settings, declared with everything about it; ``secret`` keeps its
    value out of ``repr``."""
    metadata = {SPEC: Spec(help, **spec)}
    return field(default=default, repr=not secret, compare=compare, metadata=metadata)


def setting_from(
    factory: Callable[[], T],
    help: str,
    *,
    secret: bool = False,
    **spec: Unpack[_SpecArguments],
) -> T:
    """:func:`setting`, with a default made anew for each instance (a dict)."""
    metadata = {SPEC: Spec(help, **spec)}
    return field(default_factory=factory, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Declared:
    """One setting: its field's name and default, and its declaration."""

    name: str
    default: Any
    spec: Spec

    @property
    def table(self) -> str | None:
        toml = self.spec.toml
        if isinstance(toml, Composite):
            return toml.table
        return None if toml is None else toml.partition(".")[0]

    @property
    def toml_keys(self) -> Mapping[str, Kind] | None:
        """The TOML keys it reads and their kinds (None: a whole table, any keys)."""
        toml = self.spec.toml
        if isinstance(toml, Composite):
            return toml.keys
        return {} if toml is None else {toml.partition(".")[2]: self.spec.kind}

    @property
    def switch_off(self) -> bool:
        """Whether its option turns a boolean off (``--no-…``)."""
        return bool(self.spec.option and self.spec.option.startswith("--no-"))

    def load(self, given: Mapping[str, Any], current: Any, directory: Path) -> Any:
        """Its value from the keys of its TOML table that were given (types checked)."""
        toml = self.spec.toml
        if isinstance(toml, Composite):
            return toml.load(given, current, directory)
        assert toml is not None
        table, _, key = toml.partition(".")
        return self.spec.kind.from_toml(given[key], f"[{table}] {key}", directory)


def declared(cls: type) -> tuple[Declared, ...]:
    """The settings a dataclass declares with :func:`setting`, in the order of its fields."""
    found = []
    for each in dataclasses.fields(cls):
        spec = each.metadata.get(SPEC)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{each.name} is not declared with setting()")
        default = (
            each.default_factory()
            if each.default_factory is not dataclasses.MISSING
            else each.default
        )
        found.append(Declared(each.name, default, spec))
    return tuple(found)
