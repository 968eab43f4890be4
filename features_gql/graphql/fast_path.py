"""A compiled fast path for the hottest query shapes.

Flag checks sit on other systems' hot paths, and the general executor (Strawberry's
extensions, graphql-core's execution, per-item coercion of input objects) costs far more
than the check itself. Queries made only of ``hasFeature``, ``checks`` and
``checkMatrix`` fields are compiled once per query text into a plan that reads the
arguments straight from the JSON variables and calls FeaturesAPI directly.

A plan answers exactly what the general path would answer, or declines: every query is
parsed and validated against the real schema before it is compiled; variables whose
JSON does not have exactly the expected shape send the request down the general path,
which produces the standard coercion errors; errors of a planned field are built and
translated the same way (same message, location, path and code).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    ListTypeNode,
    ListValueNode,
    NamedTypeNode,
    NonNullTypeNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    TypeNode,
    ValueNode,
    VariableNode,
    is_non_null_type,
    parse,
    specified_rules,
    validate,
)

from features_gql.api import FeaturesAPI
from features_gql.graphql.errors import translate

#: What an argument holds, and the variable type that may supply it.
RESOURCE, STRING, STRING_LIST, CHECK_ITEMS = (
    "ResourceInput!",
    "String!",
    "[String!]!",
    ("[CheckInput!]!"),
)

_ARGUMENTS = {
    "hasFeature": {"resource": RESOURCE, "feature": STRING},
    "checks": {"items": CHECK_ITEMS},
    "checkMatrix": {"type": STRING, "ids": STRING_LIST, "features": STRING_LIST},
}
_CHECK_FIELDS = ("enabled", "feature")
_RESOURCE_FIELDS = ("type", "id")

Missing = object()


@dataclass(frozen=True, slots=True)
class Argument:
    variable: str | None
    literal: Any = None


@dataclass(frozen=True, slots=True)
class PlannedField:
    name: str
    alias: str
    node: FieldNode
    arguments: dict[str, Argument]
    nullable: bool
    #: For ``checks``: (response key, field, sub-selection of resource or None).
    selection: tuple[tuple[str, str, tuple[tuple[str, str], ...] | None], ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    operation_name: str | None
    fields: tuple[PlannedField, ...]
    variables: dict[str, str]


@dataclass(slots=True)
class Answer:
    data: dict[str, Any] | None
    errors: list[GraphQLError]


def _type_string(node: TypeNode) -> str:
    if isinstance(node, NonNullTypeNode):
        return _type_string(node.type) + "!"
    if isinstance(node, ListTypeNode):
        return f"[{_type_string(node.type)}]"
    assert isinstance(node, NamedTypeNode)
    return node.name.value


def _literal(value: ValueNode, kind: str) -> Any:
    """The Python value of a literal argument, or Missing when this plan cannot hold it."""
    if kind == STRING and isinstance(value, StringValueNode):
        return value.value
    if (
        kind == STRING_LIST
        and isinstance(value, ListValueNode)
        and all(isinstance(item, StringValueNode) for item in value.values)
    ):
        return [item.value for item in value.values]  # type: ignore[attr-defined]
    if kind == RESOURCE and isinstance(value, ObjectValueNode):
        fields = {f.name.value: f.value for f in value.fields}
        if set(fields) == {"type", "id"} and all(
            isinstance(v, StringValueNode) for v in fields.values()
        ):
            return {k: v.value for k, v in fields.items()}  # type: ignore[attr-defined]
    return Missing


def _check_selection(
    selection_set: SelectionSetNode | None,
) -> tuple[tuple[str, str, tuple[tuple[str, str], ...] | None], ...] | None:
    if selection_set is None:
        return None
    planned: list[tuple[str, str, tuple[tuple[str, str], ...] | None]] = []
    for node in selection_set.selections:
        if not isinstance(node, FieldNode) or node.directives or node.arguments:
            return None
        name = node.name.value
        key = node.alias.value if node.alias else name
        if any(key == seen for seen, _, _ in planned):
            return None  # GraphQL merges fields of one response key; the plan does not
        if name in _CHECK_FIELDS and node.selection_set is None:
            planned.append((key, name, None))
        elif name == "resource" and node.selection_set is not None:
            sub: list[tuple[str, str]] = []
            for inner in node.selection_set.selections:
                if (
                    not isinstance(inner, FieldNode)
                    or inner.directives
                    or inner.arguments
                    or inner.selection_set is not None
                    or inner.name.value not in _RESOURCE_FIELDS
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


def compile_plan(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> Plan | None:
    """A plan for ``document`` (already validated), or None when it is not a fast shape."""
    if len(document.definitions) != 1:
        return None
    operation = document.definitions[0]
    if (
        not isinstance(operation, OperationDefinitionNode)
        or operation.operation != OperationType.QUERY
        or operation.directives
    ):
        return None
    name = operation.name.value if operation.name else None
    if operation_name is not None and operation_name != name:
        return None
    variables: dict[str, str] = {}
    for definition in operation.variable_definitions or ():
        if definition.default_value is not None or definition.directives:
            return None
        variables[definition.variable.name.value] = _type_string(definition.type)
    query_type = schema.query_type
    assert query_type is not None
    fields: list[PlannedField] = []
    for node in operation.selection_set.selections:
        if not isinstance(node, FieldNode) or node.directives:
            return None
        field_name = node.name.value
        alias = node.alias.value if node.alias else field_name
        if any(alias == field.alias for field in fields):
            return None  # merged by GraphQL into one field, answered once: general path
        expected = _ARGUMENTS.get(field_name)
        if expected is None or field_name not in query_type.fields:
            return None
        arguments: dict[str, Argument] = {}
        for argument in node.arguments or ():
            kind = expected.get(argument.name.value)
            if kind is None:
                return None
            if isinstance(argument.value, VariableNode):
                variable = argument.value.name.value
                if variables.get(variable) != kind:
                    return None
                arguments[argument.name.value] = Argument(variable)
            else:
                literal = _literal(argument.value, kind)
                if literal is Missing:
                    return None
                arguments[argument.name.value] = Argument(None, literal)
        if set(arguments) != set(expected):
            return None
        selection: tuple[tuple[str, str, tuple[tuple[str, str], ...] | None], ...] = ()
        if field_name == "checks":
            planned = _check_selection(node.selection_set)
            if planned is None:
                return None
            selection = planned
        elif node.selection_set is not None:
            return None
        fields.append(
            PlannedField(
                name=field_name,
                alias=alias,
                node=node,
                arguments=arguments,
                nullable=not is_non_null_type(query_type.fields[field_name].type),
                selection=selection,
            )
        )
    return Plan(name, tuple(fields), variables)


def _is_resource(value: Any) -> bool:
    return (
        type(value) is dict
        and len(value) == 2
        and type(value.get("type")) is str
        and type(value.get("id")) is str
    )


def _is_string_list(value: Any) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _is_check_items(value: Any) -> bool:
    return type(value) is list and all(
        type(item) is dict
        and len(item) == 2
        and type(item.get("feature")) is str
        and _is_resource(item.get("resource"))
        for item in value
    )


_SHAPES: dict[str, Callable[[Any], bool]] = {
    RESOURCE: _is_resource,
    STRING: lambda value: type(value) is str,
    STRING_LIST: _is_string_list,
    CHECK_ITEMS: _is_check_items,
}


class FastPath:
    """Compiles and answers fast-path queries; :meth:`answer` returns None to decline."""

    def __init__(self, schema: GraphQLSchema, *, max_tokens: int, cache_size: int = 256) -> None:
        self.schema = schema
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self._rules = list(specified_rules)
        #: Requests answered here (the rest went down the general path).
        self.answered = 0

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        key = (query, operation_name)
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._compile(query, operation_name)
            self._plans[key] = plan
            if len(self._plans) > self.cache_size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def _compile(self, query: str, operation_name: str | None) -> Plan | None:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        if validate(self.schema, document, self._rules):
            return None
        return compile_plan(self.schema, document, operation_name)

    async def answer(
        self,
        plan: Plan,
        variables: dict[str, Any],
        api: FeaturesAPI,
        request_id: str | None,
    ) -> Answer | None:
        for name, kind in plan.variables.items():
            if not _SHAPES[kind](variables.get(name, Missing)):
                return None  # the general path reports the coercion error

        def value(field: PlannedField, argument: str) -> Any:
            spec = field.arguments[argument]
            return spec.literal if spec.variable is None else variables[spec.variable]

        if len(plan.fields) == 1:
            outcomes: Sequence[Any] = [await _resolve(plan.fields[0], value, api)]
        else:
            outcomes = await asyncio.gather(*(_resolve(field, value, api) for field in plan.fields))
        data: dict[str, Any] | None = {}
        errors: list[GraphQLError] = []
        for field, outcome in zip(plan.fields, outcomes, strict=True):
            if isinstance(outcome, _Failed):
                error = GraphQLError(
                    str(outcome.error),
                    nodes=[field.node],
                    path=[field.alias],
                    original_error=outcome.error,
                )
                errors.append(translate(error, request_id))
                if not field.nullable:
                    data = None
                elif data is not None:
                    data[field.alias] = None
            elif data is not None:
                data[field.alias] = outcome
        self.answered += 1
        return Answer(data, errors)


@dataclass(slots=True)
class _Failed:
    error: Exception


async def _resolve(
    field: PlannedField, value: Callable[[PlannedField, str], Any], api: FeaturesAPI
) -> Any:
    try:
        if field.name == "hasFeature":
            resource = value(field, "resource")
            return await api.has((resource["type"], resource["id"]), value(field, "feature"))
        if field.name == "checkMatrix":
            return await api.check_matrix(
                value(field, "type"), value(field, "ids"), value(field, "features")
            )
        items = value(field, "items")
        asked = [
            ((item["resource"]["type"], item["resource"]["id"]), item["feature"]) for item in items
        ]
        answers = await api.check_many(asked)
        return [
            _check(item, enabled, field.selection)
            for item, enabled in zip(items, answers, strict=True)
        ]
    except Exception as exc:
        return _Failed(exc)


def _check(
    item: dict[str, Any],
    enabled: bool,
    selection: tuple[tuple[str, str, tuple[tuple[str, str], ...] | None], ...],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name, sub in selection:
        if name == "enabled":
            out[key] = enabled
        elif name == "feature":
            out[key] = item["feature"]
        else:
            resource = item["resource"]
            out[key] = {sub_key: resource[sub_name] for sub_key, sub_name in sub or ()}
    return out
