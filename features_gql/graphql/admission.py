"""Whether a GraphQL request may run, decided before any of it runs.

Every way into the schema (the compiled fast path, Strawberry's general path, and any
later transport) asks :class:`Gate` first. It

- parses and validates each query text once, and keeps the result in a cache bounded in
  bytes as well as in entries;
- bounds the depth of a query (linear in the document: fragments are measured once);
- bounds its cost, the number of store items it may ask for summed over every field and
  alias, using the request's variables (a list variable costs its length);
- checks that the caller's scopes allow the operation.

What it refuses, it refuses with GraphQL errors that carry a code, before any store call.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    parse,
    specified_rules,
    validate,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

from features_gql.auth import Principal
from features_gql.limits import Limits as Limits  # re-exported: the settings' [limits]

FORBIDDEN = "FORBIDDEN"
TOO_COMPLEX = "QUERY_TOO_COMPLEX"
TOO_DEEP = "QUERY_TOO_DEEP"
BAD_REQUEST = "BAD_REQUEST"

#: The scope each kind of operation needs.
REQUIRED_SCOPE = {
    OperationType.QUERY: "read",
    OperationType.MUTATION: "write",
    OperationType.SUBSCRIPTION: "read",
}

#: Arguments whose value sets how many items a field asks for.
SIZE_ARGUMENTS = frozenset({"items", "ids", "features", "first"})
#: A paginated field without ``first`` is charged for this many items.
DEFAULT_PAGE_COST = 100


@dataclass(slots=True)
class PreparedQuery:
    """One query text, parsed and validated (or the errors that stopped it)."""

    document: DocumentNode | None
    errors: list[GraphQLError]
    #: Estimated bytes held by this entry, charged against the cache's byte budget.
    size: int
    fragments: dict[str, FragmentDefinitionNode] = field(default_factory=dict)
    #: Cost per operation when no variable can change it (else computed per request).
    static_costs: dict[str | None, int] = field(default_factory=dict)
    #: Whatever a faster executor compiled for this text, per operation name.
    plans: dict[str | None, object] = field(default_factory=dict)
    #: The operation each name selects (only names that select one: bounded).
    selected: dict[str | None, OperationDefinitionNode] = field(default_factory=dict)
    #: The decision per (operation name, method, caller) when nothing in the request can
    #: change it (the cost is static). Bounded: names that select an operation, two
    #: methods, and the configured tokens plus anonymous.
    admitted: dict[tuple[str | None, str, str, frozenset[str], bool], Admitted] = field(
        default_factory=dict
    )


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request the gate lets through: its document, operation and caller."""

    prepared: PreparedQuery
    document: DocumentNode
    operation: OperationDefinitionNode
    operation_name: str | None
    principal: Principal


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the gate stops: the errors to answer, and whether any data goes with them.

    ``data`` is set when the refusal is per field (FORBIDDEN): the fields are null.
    ``http_status`` overrides the status for refusals that are not GraphQL results.
    """

    errors: list[GraphQLError]
    operation_name: str | None = None
    data: dict[str, Any] | None = None
    has_data: bool = False
    http_status: int | None = None
    allow: str | None = None


def _estimate_bytes(query: str) -> int:
    # A parsed document holds about 90-105 bytes of Python objects per source character
    # (measured with tracemalloc on large alias-heavy queries); charge a little more.
    return 1024 + 128 * len(query) + sys.getsizeof(query)


class QueryCache:
    """Least recently used prepared queries, bounded in entries and in bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, PreparedQuery] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> PreparedQuery | None:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
        return entry

    def put(self, query: str, entry: PreparedQuery) -> None:
        if entry.size > self.max_bytes // 4:
            return  # one huge query must not evict everything else
        old = self._entries.pop(query, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[query] = entry
        self.bytes += entry.size
        while self._entries and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size


class Gate:
    """Decides whether a request may run (see the module docstring)."""

    def __init__(
        self, schema: GraphQLSchema, limits: Limits = Limits(), *, introspection: bool = True
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.introspection = introspection
        self.cache = QueryCache(limits.cache_entries, limits.cache_bytes)
        self._rules = _validation_rules()
        if not introspection:
            self._rules.append(NoSchemaIntrospectionCustomRule)

    def prepare(self, query: str) -> PreparedQuery:
        """Parse and validate ``query``, once per text while it stays in the cache."""
        cached = self.cache.get(query)
        if cached is not None:
            return cached
        prepared = self._prepare(query)
        self.cache.put(query, prepared)
        return prepared

    def _prepare(self, query: str) -> PreparedQuery:
        size = _estimate_bytes(query)
        try:
            document = parse(query, max_tokens=self.limits.max_tokens)
        except GraphQLError as error:
            return PreparedQuery(None, [error], size)
        crowded = _crowded_selection_set(document, self.limits.max_selections)
        if crowded is not None:
            return PreparedQuery(
                None,
                [
                    GraphQLError(
                        f"A selection set holds {len(crowded.selections)} selections; at most "
                        f"{self.limits.max_selections} are allowed. Ask for many checks with "
                        "`checks` or `checkMatrix` instead of aliases.",
                        nodes=[crowded],
                        extensions={"code": TOO_COMPLEX, "limit": self.limits.max_selections},
                    )
                ],
                size,
            )
        errors = validate(self.schema, document, self._rules)
        if errors:
            return PreparedQuery(None, errors, size)
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        prepared = PreparedQuery(document, [], size, fragments)
        measure = _Measure(self.schema, fragments, None)
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            root = self.schema.get_root_type(definition.operation)
            assert root is not None  # validation checked the operation type exists
            depth = measure.depth(definition.selection_set, root)
            if depth > self.limits.max_depth:
                name = definition.name.value if definition.name else "the operation"
                return PreparedQuery(
                    None,
                    [
                        GraphQLError(
                            f"{name} is nested {depth} levels deep; at most "
                            f"{self.limits.max_depth} are allowed.",
                            nodes=[definition],
                            extensions={"code": TOO_DEEP, "depth": depth},
                        )
                    ],
                    size,
                )
            if not measure.uses_variables(definition.selection_set, root):
                key = definition.name.value if definition.name else None
                prepared.static_costs[key] = measure.cost(definition.selection_set, root)
        return prepared

    def admit(
        self,
        query: str,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        principal: Principal,
        *,
        method: str = "POST",
    ) -> Admitted | Refused:
        prepared = self.cache.get(query) or self.prepare(query)
        # The same question as an earlier request: the same answer, without asking again.
        # The caller's fields (all of a Principal's) are the key, hashed in C (a dataclass
        # hashes in Python).
        key = (operation_name, method, principal.name, principal.scopes, principal.anonymous)
        known = prepared.admitted.get(key)
        if known is not None:
            return known
        if prepared.document is None:
            return Refused(prepared.errors)
        document = prepared.document
        operation = prepared.selected.get(operation_name) or _select(document, operation_name)
        if isinstance(operation, str):
            return Refused(
                [GraphQLError(operation, extensions={"code": BAD_REQUEST})], http_status=400
            )
        prepared.selected[operation_name] = operation
        name = operation.name.value if operation.name else None
        if method == "GET" and operation.operation is OperationType.MUTATION:
            return Refused(
                [
                    GraphQLError(
                        f"A {operation.operation.value} must be sent with POST.",
                        extensions={"code": "METHOD_NOT_ALLOWED"},
                    )
                ],
                name,
                http_status=405,
                allow="POST",
            )
        root = self.schema.get_root_type(operation.operation)
        assert root is not None
        cost = prepared.static_costs.get(name)
        if cost is None:
            cost = _Measure(self.schema, prepared.fragments, variables or {}).cost(
                operation.selection_set, root
            )
        if cost > self.limits.max_cost:
            return Refused(
                [
                    GraphQLError(
                        f"This request would ask for {cost} items; the limit is "
                        f"{self.limits.max_cost}. Split it into smaller requests.",
                        nodes=[operation],
                        extensions={
                            "code": TOO_COMPLEX,
                            "cost": cost,
                            "limit": self.limits.max_cost,
                        },
                    )
                ],
                name,
            )
        scope = REQUIRED_SCOPE[operation.operation]
        if not principal.can(scope):
            return _forbidden(root, operation, prepared.fragments, principal, scope, name)
        admitted = Admitted(prepared, document, operation, name, principal)
        if name in prepared.static_costs:
            prepared.admitted[key] = admitted
        return admitted


def _crowded_selection_set(document: DocumentNode, limit: int) -> SelectionSetNode | None:
    """The first selection set with more than ``limit`` selections, if any (linear)."""
    stack: list[SelectionSetNode] = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while stack:
        selection_set = stack.pop()
        if len(selection_set.selections) > limit:
            return selection_set
        for node in selection_set.selections:
            inner = getattr(node, "selection_set", None)
            if inner is not None:
                stack.append(inner)
    return None


def _validation_rules() -> list[Any]:
    rules: list[Any] = list(specified_rules)
    # Strawberry adds these two to graphql-core's rules; the gate validates for it.
    from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
    from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

    rules += [MaybeNullValidationRule, OneOfInputValidationRule]
    return rules


def _select(document: DocumentNode, name: str | None) -> OperationDefinitionNode | str:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        if len(operations) == 1:
            return operations[0]
        return "Must provide operation name if query contains multiple operations."
    for operation in operations:
        if operation.name is not None and operation.name.value == name:
            return operation
    return f"Unknown operation named '{name:.100}'."


def _root_fields(
    selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> list[FieldNode]:
    found: list[FieldNode] = []
    seen: set[str] = set()
    for node in selection_set.selections:
        if isinstance(node, FieldNode):
            found.append(node)
        elif isinstance(node, InlineFragmentNode):
            found += _root_fields(node.selection_set, fragments)
        elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
            seen.add(node.name.value)
            fragment = fragments.get(node.name.value)
            if fragment is not None:
                found += _root_fields(fragment.selection_set, fragments)
    return found


def _forbidden(
    root: GraphQLObjectType,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    principal: Principal,
    scope: str,
    name: str | None,
) -> Refused:
    errors: list[GraphQLError] = []
    data: dict[str, Any] | None = {}
    for node in _root_fields(operation.selection_set, fragments):
        key = node.alias.value if node.alias else node.name.value
        if data is not None and key in data:
            continue
        definition = root.fields.get(node.name.value)
        if node.name.value == "__typename":
            data[key] = root.name  # type: ignore[index]
            continue
        errors.append(
            GraphQLError(
                f"The token {principal.name!r} lacks the {scope!r} scope needed for "
                f"{node.name.value}.",
                nodes=[node],
                path=[key],
                extensions={"code": FORBIDDEN, "scope": scope},
            )
        )
        if definition is not None and is_non_null_type(definition.type):
            data = None
        elif data is not None:
            data[key] = None
    return Refused(errors, name, data=data, has_data=True)


class _Measure:
    """Depth and cost of selection sets, each fragment measured once per request."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any] | None,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self._depths: dict[str, int] = {}
        self._costs: dict[tuple[str, int | None], int] = {}
        self._dynamic: dict[str, bool] = {}

    def _field(self, parent: GraphQLNamedType | None, node: FieldNode) -> GraphQLField | None:
        if node.name.value == "__typename":
            return TypeNameMetaFieldDef
        if node.name.value == "__schema":
            return SchemaMetaFieldDef
        if node.name.value == "__type":
            return TypeMetaFieldDef
        fields = getattr(parent, "fields", None)
        return None if fields is None else fields.get(node.name.value)

    def _inner(self, parent: GraphQLNamedType | None, name: str | None) -> GraphQLNamedType | None:
        return parent if name is None else self.schema.get_type(name)

    # Depth -----------------------------------------------------------------------------

    def depth(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> int:
        deepest = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                if node.name.value.startswith("__"):
                    # Introspection nests as deep as type references go; its size is
                    # bounded by the cost limit instead (lists charged at full length).
                    continue
                level = 1
                if node.selection_set is not None:
                    definition = self._field(parent, node)
                    inner = None if definition is None else get_named_type(definition.type)
                    level += self.depth(node.selection_set, inner)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else None
                level = self.depth(node.selection_set, self._inner(parent, condition))
            elif isinstance(node, FragmentSpreadNode):
                level = self._fragment_depth(node)
            else:
                continue
            deepest = max(deepest, level)
        return deepest

    def _fragment_depth(self, node: FragmentSpreadNode) -> int:
        name = node.name.value
        if name not in self._depths:
            self._depths[name] = 0  # validation rejects cycles; this guards the walk anyway
            fragment = self.fragments[name]
            self._depths[name] = self.depth(
                fragment.selection_set, self.schema.get_type(fragment.type_condition.name.value)
            )
        return self._depths[name]

    # Cost ------------------------------------------------------------------------------

    def uses_variables(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None
    ) -> bool:
        """Whether a variable decides the size of some field in ``selection_set``."""
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                if any(
                    a.name.value in SIZE_ARGUMENTS and isinstance(a.value, VariableNode)
                    for a in node.arguments or ()
                ):
                    return True
                if node.selection_set is not None:
                    definition = self._field(parent, node)
                    inner = None if definition is None else get_named_type(definition.type)
                    if self.uses_variables(node.selection_set, inner):
                        return True
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else None
                if self.uses_variables(node.selection_set, self._inner(parent, condition)):
                    return True
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name not in self._dynamic:
                    self._dynamic[name] = False
                    fragment = self.fragments[name]
                    self._dynamic[name] = self.uses_variables(
                        fragment.selection_set,
                        self.schema.get_type(fragment.type_condition.name.value),
                    )
                if self._dynamic[name]:
                    return True
        return False

    def cost(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType | None,
        bound: int | None = None,
    ) -> int:
        """The cost of ``selection_set``. ``bound`` sizes its lists that have no size
        argument of their own: the items of the field above (a bulk mutation's results)."""
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += self._field_cost(parent, node, bound)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else None
                total += self.cost(node.selection_set, self._inner(parent, condition), bound)
            elif isinstance(node, FragmentSpreadNode):
                key = (node.name.value, bound)
                if key not in self._costs:
                    self._costs[key] = 0
                    fragment = self.fragments[node.name.value]
                    self._costs[key] = self.cost(
                        fragment.selection_set,
                        self.schema.get_type(fragment.type_condition.name.value),
                        bound,
                    )
                total += self._costs[key]
        return total

    def _field_cost(
        self, parent: GraphQLNamedType | None, node: FieldNode, bound: int | None = None
    ) -> int:
        definition = self._field(parent, node)
        if definition is None:
            return 1
        arguments = {a.name.value: a.value for a in node.arguments or ()}
        # What the field itself asks of the store: one item, or as many as its list
        # arguments hold. A plain scalar field (no arguments) costs nothing.
        own = (
            1
            if arguments
            or _is_list(definition)
            or not is_leaf_type(get_named_type(definition.type))
            else 0
        )
        sized = False
        if "items" in arguments:
            own = max(own, self._length(arguments["items"]))
            sized = True
        if "ids" in arguments or "features" in arguments:
            ids = self._length(arguments["ids"]) if "ids" in arguments else 1
            features = self._length(arguments["features"]) if "features" in arguments else 1
            own = max(own, ids * features)
            sized = True
        if node.selection_set is None:
            if bound is not None and _is_list(definition) and not arguments:
                return max(own, bound)  # a list of scalars as long as the items asked
            return own
        inner = get_named_type(definition.type)
        # Lists below a field sized by its items (addFeatures' changes) are that long.
        inner_bound = own if sized else None
        times = 1
        if "first" in definition.args:
            times = self._int(arguments.get("first"), definition)
        elif _is_list(definition) and node.name.value not in ("checks", "edges"):
            # Lists with no size argument are as long as the items of the field above them
            # (a bulk result); otherwise (introspection's types, fields, args...) charged
            # for their largest possible length in this schema.
            times = bound if bound is not None else self._list_bound(node.name.value)
        children = self.cost(node.selection_set, inner, inner_bound)
        return own + times * children

    def _length(self, value: ValueNode) -> int:
        if isinstance(value, ListValueNode):
            return len(value.values)
        if isinstance(value, VariableNode):
            given = (self.variables or {}).get(value.name.value)
            return len(given) if isinstance(given, list) else 1
        return 1

    def _int(self, value: ValueNode | None, definition: GraphQLField) -> int:
        if isinstance(value, IntValueNode):
            return max(int(value.value), 0)
        if isinstance(value, VariableNode):
            given = (self.variables or {}).get(value.name.value)
            if isinstance(given, int) and not isinstance(given, bool):
                return max(given, 0)
        default = definition.args["first"].default_value
        return default if isinstance(default, int) and default > 0 else DEFAULT_PAGE_COST

    def _list_bound(self, name: str) -> int:
        return _list_bounds(self.schema).get(name, DEFAULT_PAGE_COST)


_BOUNDS: dict[int, dict[str, int]] = {}


def _list_bounds(schema: GraphQLSchema) -> dict[str, int]:
    """What a list of the introspection schema holds, on average, in this schema.

    Averages rather than maxima: the standard introspection query would otherwise be
    charged for every type having as many fields as the largest, each with as many
    arguments as the busiest field. A query nesting these lists still grows by at least
    a factor of two per level, which is what the cost limit is there to stop.
    """
    bounds = _BOUNDS.get(id(schema))
    if bounds is None:
        types = list(schema.type_map.values())
        fields = [f for t in types for f in (getattr(t, "fields", None) or {}).values()]

        def mean(sizes: list[int]) -> int:
            return max(2, -(-sum(sizes) // max(len(sizes), 1)))

        bounds = {
            "types": len(types),
            "directives": len(schema.directives),
            "fields": mean([len(getattr(t, "fields", None) or {}) for t in types]),
            "inputFields": mean([len(getattr(t, "fields", None) or {}) for t in types]),
            "args": mean([len(getattr(f, "args", None) or {}) for f in fields]),
            "enumValues": mean([len(getattr(t, "values", None) or {}) for t in types]),
            "interfaces": 2,
            "possibleTypes": mean(
                [
                    len(schema.get_possible_types(t))
                    for t in types
                    if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)
                ]
            ),
            "locations": 2,
        }
        _BOUNDS[id(schema)] = bounds
    return bounds


def _is_list(definition: GraphQLField) -> bool:
    kind = definition.type
    if isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    return isinstance(kind, GraphQLList) or is_list_type(kind)
