"""A compiled executor for the hottest query shapes.

Flag checks sit on other systems' hot paths, and the general executor (Strawberry's
extensions, graphql-core's execution, per-item coercion of input objects) costs far more
than the check itself. Queries made only of ``hasFeature``, ``checks`` and
``checkMatrix`` fields are compiled, once per admitted query text, into a plan that
reads the arguments straight from the JSON variables and calls the same field
definitions (:mod:`features_gql.graphql.hot_fields`) as the Strawberry resolvers.

What it does not do itself it takes from elsewhere, so it cannot drift:

- parsing, validation, limits and scopes: the request was admitted by the gate;
- argument types: read from the schema, and the JSON shape each accepts is derived from
  them (variables of any other shape go down the general path, which reports the
  coercion error); literal arguments are coerced by graphql-core;
- schema extensions: it refuses to be built over a schema with an extension it has not
  been told it may skip (:data:`REPLICATED_EXTENSIONS`);
- errors: built and translated as the general path builds them (same message,
  location, path and code).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple, cast

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    VariableNode,
    is_non_null_type,
    print_ast,
    value_from_ast,
)
from strawberry.extensions import SchemaExtension

from features_gql.graphql import hot_fields
from features_gql.graphql.admission import Admitted
from features_gql.graphql.context import Context
from features_gql.graphql.errors import ErrorCodes, translate

Shape = Callable[[Any], bool]


class FastPathUnavailable(Exception):
    """The schema runs an extension this executor would skip."""


def _replicated() -> tuple[type[SchemaExtension], ...]:
    from features_gql.graphql.schema import Admission

    return (ErrorCodes, Admission)


#: Extensions whose work this executor does (ErrorCodes: errors are translated the same
#: way) or that has been done before it runs (Admission: the gate admitted the request).
REPLICATED_EXTENSIONS = "ErrorCodes", "Admission"


@dataclass(frozen=True, slots=True)
class Argument:
    variable: str | None
    literal: Any = None


#: A projection of one ``Check``: (response key, field, sub-projection of ``resource``).
Projection = tuple[tuple[str, str, tuple[tuple[str, str], ...] | None], ...]
#: The answers of a ``checks`` field shaped as its selection asks, from the items asked
#: and whether each is enabled.
Project = Callable[
    [Sequence[str], Sequence[str], Sequence[str], Sequence[bool]], list[dict[str, Any]]
]


#: A planned field's call of its one definition, given the request's variables.
Run = Callable[[dict[str, Any], Context], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PlannedField:
    name: str
    alias: str
    node: FieldNode
    nullable: bool
    #: The field's call, with its arguments' readers bound (see _runner).
    run: Run


@dataclass(frozen=True, slots=True)
class Plan:
    operation_name: str | None
    fields: tuple[PlannedField, ...]
    #: Whether the request's variables hold every variable the plan reads, each in the
    #: JSON shape that needs no coercion (one compiled function for all of them).
    variables: Shape


class Answer(NamedTuple):
    data: dict[str, Any] | None
    errors: list[GraphQLError]


#: ``Answer`` built in C (a named tuple's own ``__new__`` is a Python function).
_answer = cast(
    "Callable[[tuple[dict[str, Any] | None, list[GraphQLError]]], Answer]",
    partial(tuple.__new__, Answer),
)


_DECLINED = object()

_RESOURCE = itemgetter("resource")
_TYPE = itemgetter("type")
_ID = itemgetter("id")
_FEATURE = itemgetter("feature")


def _shapes(kinds: dict[str, GraphQLInputType]) -> Shape | None:
    """Whether a request's variables hold each of ``kinds`` (variable name to type) as a
    JSON value that coerces to itself; None when some type is not one this executor
    reads straight from JSON (nullable, numbers, defaults...).

    The check is compiled from the types into one straight-line function (a loop per
    list, a test per field): checking the 1,000 items of a ``checks`` request this way
    costs a fraction of nested per-type closures, and a request with several variables
    makes one call.
    """
    lines: list[str] = []
    counter = [0]
    for name, kind in kinds.items():
        counter[0] += 1
        value = f"v{counter[0]}"
        # A missing variable is a KeyError too.
        lines.append(f"        {value} = variables[{name!r}]")
        if not _emit(kind, value, lines, "        ", counter):
            return None
    # Fields are read by subscript (far cheaper than .get); the size of each object was
    # checked first, so a KeyError means a field is missing and another is in its place.
    source = (
        "def shape(variables):\n    try:\n"
        + "\n".join(lines or ["        pass"])
        + "\n    except KeyError:\n        return False\n    return True\n"
    )
    check: Shape = _compiled(source, f"<shape of {', '.join(kinds) or 'no variables'}>", "shape")
    return check


def _emit(kind: GraphQLInputType, name: str, lines: list[str], indent: str, n: list[int]) -> bool:
    """Append the checks of ``name`` against ``kind``; False when it cannot be checked."""
    if not isinstance(kind, GraphQLNonNull):
        return False
    inner = kind.of_type
    if inner is GraphQLString:
        lines.append(f"{indent}if type({name}) is not str: return False")
        return True
    if isinstance(inner, GraphQLList):
        n[0] += 1
        item = f"v{n[0]}"
        lines.append(f"{indent}if type({name}) is not list: return False")
        lines.append(f"{indent}for {item} in {name}:")
        return _emit(inner.of_type, item, lines, indent + "    ", n)
    if isinstance(inner, GraphQLInputObjectType):
        lines.append(f"{indent}if type({name}) is not dict or len({name}) != {len(inner.fields)}:")
        lines.append(f"{indent}    return False")
        for field_name, field in inner.fields.items():
            if field.default_value is not Undefined:
                return False
            n[0] += 1
            value = f"v{n[0]}"
            lines.append(f"{indent}{value} = {name}[{field_name!r}]")
            if not _emit(field.type, value, lines, indent, n):
                return False
        return True
    return False


def _projection(selection_set: SelectionSetNode | None) -> Projection | None:
    """How to shape one ``Check`` for ``selection_set``, or None when it is not a plain
    selection of its fields (fragments, directives: the general path answers those)."""
    if selection_set is None:
        return None
    planned: list[tuple[str, str, tuple[tuple[str, str], ...] | None]] = []
    for node in selection_set.selections:
        if not isinstance(node, FieldNode) or node.directives or node.arguments:
            return None
        name = node.name.value
        key = node.alias.value if node.alias else name
        if any(key == seen for seen, _, _ in planned):
            return None  # GraphQL merges the fields of one response key; a plan does not
        if name in ("enabled", "feature", "__typename") and node.selection_set is None:
            planned.append((key, name, None))
        elif name == "resource" and node.selection_set is not None:
            sub: list[tuple[str, str]] = []
            for inner in node.selection_set.selections:
                if (
                    not isinstance(inner, FieldNode)
                    or inner.directives
                    or inner.arguments
                    or inner.selection_set is not None
                    or inner.name.value not in ("type", "id", "__typename")
                ):
                    return None
                inner_key = inner.alias.value if inner.alias else inner.name.value
                if any(inner_key == seen for seen, _ in sub):
                    return None
                sub.append((inner_key, inner.name.value))
            planned.append((key, "resource", tuple(sub)))
        else:
            return None
    return tuple(planned)


class FastPath:
    """Compiles and answers admitted hot queries; :meth:`plan` returns None to decline."""

    HOT_FIELDS = ("hasFeature", "checks", "checkMatrix")

    def __init__(self, schema: GraphQLSchema, extensions: Sequence[object]) -> None:
        replicated = _replicated()
        for extension in extensions:
            if not (isinstance(extension, type) and issubclass(extension, replicated)):
                raise FastPathUnavailable(
                    f"the schema runs the extension {extension!r}, which the fast path would "
                    f"skip; it replicates only {', '.join(REPLICATED_EXTENSIONS)}. Teach it "
                    "the extension's work, or serve with fast_path = false"
                )
        self.schema = schema
        query_type = schema.query_type
        assert query_type is not None
        self.query_type: GraphQLObjectType = query_type
        self.fields: dict[str, GraphQLField] = {
            name: query_type.fields[name] for name in self.HOT_FIELDS
        }
        #: Requests answered here (the rest went down the general path).
        self.answered = 0

    def plan(self, admitted: Admitted) -> Plan | None:
        plans = admitted.prepared.plans
        key = admitted.operation_name
        if key in plans:
            found = plans[key]
        else:
            found = plans[key] = self._compile(admitted.operation) or _DECLINED
        return found if isinstance(found, Plan) else None

    def _compile(self, operation: OperationDefinitionNode) -> Plan | None:
        if operation.operation != OperationType.QUERY or operation.directives:
            return None
        declared: dict[str, str] = {}
        for definition in operation.variable_definitions or ():
            if definition.default_value is not None or definition.directives:
                return None
            declared[definition.variable.name.value] = print_ast(definition.type)
        kinds: dict[str, GraphQLInputType] = {}
        fields: list[PlannedField] = []
        for node in operation.selection_set.selections:
            if not isinstance(node, FieldNode) or node.directives:
                return None
            schema_field = self.fields.get(node.name.value)
            if schema_field is None:
                return None
            alias = node.alias.value if node.alias else node.name.value
            if any(alias == field.alias for field in fields):
                return None  # one field to GraphQL, answered once and merged: general path
            arguments: dict[str, Argument] = {}
            for argument in node.arguments or ():
                kind = schema_field.args[argument.name.value].type
                if isinstance(argument.value, VariableNode):
                    variable = argument.value.name.value
                    # Only a variable declared with the argument's own type coerces to
                    # itself; anything looser needs the general path's coercion.
                    if declared.get(variable) != str(kind):
                        return None
                    kinds[variable] = kind
                    arguments[argument.name.value] = Argument(variable)
                else:
                    literal = value_from_ast(argument.value, kind)
                    if literal is Undefined:
                        return None
                    arguments[argument.name.value] = Argument(None, _plain(literal))
            if set(arguments) != set(schema_field.args):
                return None
            project: Project | None = None
            if node.name.value == "checks":
                planned = _projection(node.selection_set)
                if planned is None:
                    return None
                project = _compile_projection(planned)
            fields.append(
                PlannedField(
                    name=node.name.value,
                    alias=alias,
                    node=node,
                    nullable=not is_non_null_type(schema_field.type),
                    run=_runner(node.name.value, arguments, project),
                )
            )
        shapes = _shapes(kinds)
        if shapes is None:
            return None
        name = operation.name.value if operation.name else None
        return Plan(name, tuple(fields), shapes)

    async def answer(
        self, plan: Plan, variables: dict[str, Any], context: Context
    ) -> Answer | None:
        """The response for ``plan``, or None when the variables need the general path."""
        if not plan.variables(variables):
            return None
        fields = plan.fields
        outcomes: Sequence[Any]
        if len(fields) == 1:
            # The common request, one field: no gathering, and its answer straight out.
            field = fields[0]
            context.checks.sole = True
            try:
                result = await field.run(variables, context)
            except Exception as exc:
                outcomes = [_Failed(exc)]
            else:
                self.answered += 1
                return _answer(({field.alias: result}, []))
        else:
            outcomes = await asyncio.gather(
                *(_outcome(field, variables, context) for field in fields)
            )
        data: dict[str, Any] | None = {}
        errors: list[GraphQLError] = []
        logged: set[int] = set()
        for field, outcome in zip(fields, outcomes, strict=True):
            if isinstance(outcome, _Failed):
                error = GraphQLError(
                    str(outcome.error),
                    nodes=[field.node],
                    path=[field.alias],
                    original_error=outcome.error,
                )
                errors.append(translate(error, context.request_id, logged))
                if not field.nullable:
                    data = None
                elif data is not None:
                    data[field.alias] = None
            elif data is not None:
                data[field.alias] = outcome
        self.answered += 1
        return Answer(data, errors)


def _plain(value: Any) -> Any:
    """graphql-core coerces input objects to dicts and lists to lists; keep them plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(slots=True)
class _Failed:
    error: Exception


async def _outcome(field: PlannedField, variables: dict[str, Any], context: Context) -> Any:
    try:
        return await field.run(variables, context)
    except Exception as exc:
        return _Failed(exc)


def _reader(argument: Argument) -> Callable[[dict[str, Any]], Any]:
    """How to read one argument's value from a request's variables."""
    if argument.variable is None:
        literal = argument.literal
        return lambda variables: literal
    return itemgetter(argument.variable)


def _runner(name: str, arguments: dict[str, Argument], project: Project | None) -> Run:
    """The call of the field's one definition, with its argument readers bound at plan
    time (nothing is looked up by name per request)."""
    if name == "hasFeature":
        resource, feature = _reader(arguments["resource"]), _reader(arguments["feature"])

        def has_feature(variables: dict[str, Any], context: Context) -> Awaitable[bool]:
            given = resource(variables)
            return hot_fields.has_feature(context, given["type"], given["id"], feature(variables))

        return has_feature
    if name == "checkMatrix":
        type_, ids = _reader(arguments["type"]), _reader(arguments["ids"])
        features = _reader(arguments["features"])

        def check_matrix(variables: dict[str, Any], context: Context) -> Awaitable[Any]:
            return hot_fields.check_matrix(
                context, type_(variables), ids(variables), features(variables)
            )

        return check_matrix
    items = _reader(arguments["items"])
    assert project is not None  # planned with the field

    async def checks(variables: dict[str, Any], context: Context) -> list[dict[str, Any]]:
        # The variable's shape was checked: each item is a dict of a resource (a dict of
        # two strings) and a feature, so it is taken apart in C.
        given = items(variables)
        resources = list(map(_RESOURCE, given))
        types = list(map(_TYPE, resources))
        ids = list(map(_ID, resources))
        features = list(map(_FEATURE, given))
        answers = await hot_fields.checks(context, types, ids, features)
        return project(types, ids, features, answers)

    return checks


def _compile_projection(projection: Projection) -> Project:
    """One list comprehension that builds each ``Check`` as the selection asks.

    Compiled like the variable shapes: building a thousand answers from a dict literal
    costs a fraction of walking the projection for each. Keys are GraphQL names
    (``[_A-Za-z][_0-9A-Za-z]*``), written with ``repr``.
    """
    values = {"enabled": "enabled", "feature": "feature", "__typename": "'Check'"}
    inner = {"type": "type_", "id": "id_", "__typename": "'Resource'"}
    parts: list[str] = []
    used: set[str] = set()
    for key, name, sub in projection:
        if sub is None:
            parts.append(f"{key!r}: {values[name]}")
            used.add(values[name])
        else:
            fields = ", ".join(f"{sub_key!r}: {inner[sub_name]}" for sub_key, sub_name in sub)
            parts.append(f"{key!r}: {{{fields}}}")
            used.update(inner[sub_name] for _, sub_name in sub)
    # Only the columns the answer uses are walked.
    columns = [
        (name, column)
        for name, column in (
            ("type_", "types"),
            ("id_", "ids"),
            ("feature", "features"),
            ("enabled", "answers"),
        )
        if name in used
    ] or [("_", "answers")]
    if len(columns) == 1:
        loop = f"for {columns[0][0]} in {columns[0][1]}"
    else:
        names = ", ".join(name for name, _ in columns)
        walked = ", ".join(column for _, column in columns)
        loop = f"for {names} in zip({walked}, strict=True)"
    source = (
        f"def project(types, ids, features, answers):\n    return [{{{', '.join(parts)}}} {loop}]\n"
    )
    project: Project = _compiled(source, f"<projection of {projection}>", "project")
    return project


def _compiled(source: str, filename: str, name: str) -> Any:
    """The function ``name`` that ``source`` defines, compiled under ``filename`` (which
    profiles and tracebacks show)."""
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]
