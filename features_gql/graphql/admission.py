"""Whether a GraphQL request may run, decided before any of it runs.

Every way into the schema (the compiled fast path, Strawberry's general path, and any
later transport) asks :class:`Gate` first. It

- parses and validates each query text once, and keeps the result in a cache bounded in
  bytes as well as in entries;
- bounds the depth of a query (linear in the document: fragments are measured once);
- bounds its cost, the number of store items it may ask for summed over every field and
  alias, from the values execution will use (a variable as given, else its default; a
  list its length; an Int as graphql-core coerces it), each list's selection charged once
  per item;
- checks that the caller's scopes allow the operation.

What it refuses, it refuses with GraphQL errors that carry a code, before any store call.
"""

from __future__ import annotations

import sys
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLError,
    GraphQLField,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NoSchemaIntrospectionCustomRule,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    ValueNode,
    VariableNode,
    coerce_input_value,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    parse,
    specified_rules,
    validate,
)
from graphql.pyutils import is_collection
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

#: The argument that sets a page's size. Every list argument sets a size too.
PAGE_SIZE = "first"
#: A paginated field whose ``first`` is null (the API's default page) is charged for this
#: many items.
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
        #: The texts held (to ask whether one is, in C, without touching the order).
        self.texts = self._entries.keys()

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
        measure = _Measure(self.schema, fragments)
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            root = self.schema.get_root_type(definition.operation)
            assert root is not None  # validation checked the operation type exists
            depth = measure.depth(definition.selection_set)
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
            measure = _Measure(self.schema, prepared.fragments, variables, _defaults(operation))
            cost = measure.cost(operation.selection_set, root)
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
        variables: Mapping[str, Any] | None = None,
        defaults: Mapping[str, ValueNode] | None = None,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        #: The request's variables, and the operation's defaults for those not given.
        self.variables = variables or {}
        self.defaults = defaults or {}
        roots = (schema.query_type, schema.mutation_type, schema.subscription_type)
        self.roots = tuple(root for root in roots if root is not None)
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

    def depth(self, selection_set: SelectionSetNode) -> int:
        """How many levels of fields ``selection_set`` nests (fragments add none), read
        from the syntax alone."""
        deepest = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                if node.name.value.startswith("__"):
                    # Introspection nests as deep as type references go; its size is
                    # bounded by the cost limit instead (lists charged at full length).
                    continue
                level = 1
                if node.selection_set is not None:
                    level += self.depth(node.selection_set)
            elif isinstance(node, InlineFragmentNode):
                level = self.depth(node.selection_set)
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
            self._depths[name] = self.depth(fragment.selection_set)
        return self._depths[name]

    # Cost ------------------------------------------------------------------------------

    def uses_variables(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None
    ) -> bool:
        """Whether a variable decides the size of some field in ``selection_set``."""
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                definition = self._field(parent, node)
                if definition is None:
                    continue
                if any(
                    isinstance(a.value, VariableNode)
                    and _sizes(a.name.value, definition.args[a.name.value])
                    for a in node.arguments or ()
                ):
                    return True
                if node.selection_set is not None and self.uses_variables(
                    node.selection_set, get_named_type(definition.type)
                ):
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
        """The cost of ``selection_set``, run once. ``bound`` sizes its lists that have no
        size of their own: the items the field above asked for (a bulk mutation's changes,
        a page's edges)."""
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
        size = self._size(definition, node)
        listed = _is_list(definition.type)
        # What the field itself asks for: its size (whatever the selection below asks), or
        # one item for a field with arguments, a list, or an object at the root. A scalar
        # without arguments, or an object inside a result (a check's resource, an edge's
        # node), is part of what its parent asked for: nothing.
        own = (
            1
            if node.arguments
            or listed
            or (parent in self.roots and not is_leaf_type(get_named_type(definition.type)))
            else 0
        )
        if size is not None:
            own = max(own, size)
        if node.selection_set is None:
            return own
        inner = get_named_type(definition.type)
        if not listed:
            # One result: the lists in it with no size of their own hold its items.
            return own + self.cost(node.selection_set, inner, size)
        if size is None:
            # A list with no size argument holds the items the field above it asked for
            # (addFeatures' changes, a page's edges), charged there. Introspection's lists
            # (types, fields, args...) are charged at their average length in this schema.
            size = bound if bound is not None else self._list_bound(node.name.value)
        # The selection runs once for each item of the list.
        return own + size * self.cost(node.selection_set, inner)

    def _size(self, definition: GraphQLField, node: FieldNode) -> int | None:
        """How many items ``node`` asks for: the product of its list arguments' lengths
        and its page size, as execution will see them; None if it has neither."""
        given = {a.name.value: a.value for a in node.arguments or ()}
        size: int | None = None
        for name, argument in definition.args.items():
            if not _sizes(name, argument):
                continue
            factor = (
                self._page(given.get(name), argument)
                if name == PAGE_SIZE
                else self._length(given.get(name), argument)
            )
            size = factor if size is None else size * factor
        return size

    def _used(self, value: ValueNode | None) -> Any:
        """What execution takes for an argument written as ``value``: the literal; for a
        variable, the value given (JSON, even null), else its default (a literal). Undefined
        when there is neither: the argument's own default applies."""
        if isinstance(value, VariableNode):
            name = value.name.value
            if name in self.variables:
                return self.variables[name]
            return self.defaults.get(name, Undefined)
        return Undefined if value is None else value

    def _length(self, value: ValueNode | None, argument: GraphQLArgument) -> int:
        """How many items a list argument holds at execution."""
        used = self._used(value)
        if used is Undefined:
            used = _default(argument)
        if isinstance(used, ListValueNode):
            return len(used.values)  # a variable inside it is one item, like a literal
        if isinstance(used, NullValueNode):
            return 0
        if isinstance(used, ValueNode):
            return 1  # GraphQL takes one value given for a list as a list of one
        return _items(used)

    def _page(self, value: ValueNode | None, argument: GraphQLArgument) -> int:
        """The page size (``first``) at execution."""
        used = self._used(value)
        if used is Undefined:
            used = _default(argument)
        number: Any
        if isinstance(used, ValueNode):
            # Validation lets only an Int or a null literal through.
            number = int(used.value) if isinstance(used, IntValueNode) else None
        else:
            # A variable's JSON (or a default), coerced as execution will: Int takes 1000.0
            # as 1000.
            number = coerce_input_value(used, argument.type)
        # null is the API's default page; a value coercion refuses (Undefined) never runs.
        return max(number, 0) if isinstance(number, int) else DEFAULT_PAGE_COST

    def _list_bound(self, name: str) -> int:
        return _list_bounds(self.schema).get(name, DEFAULT_PAGE_COST)


# Keyed by the schema itself, not its id(): an id is reused once its schema is gone.
_BOUNDS: weakref.WeakKeyDictionary[GraphQLSchema, dict[str, int]] = weakref.WeakKeyDictionary()


def _list_bounds(schema: GraphQLSchema) -> dict[str, int]:
    """What a list of the introspection schema holds, on average, in this schema.

    Averages rather than maxima: the standard introspection query would otherwise be
    charged for every type having as many fields as the largest, each with as many
    arguments as the busiest field. A query nesting these lists still grows by at least
    a factor of two per level, which is what the cost limit is there to stop.
    """
    bounds = _BOUNDS.get(schema)
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
        _BOUNDS[schema] = bounds
    return bounds


def _is_list(kind: GraphQLInputType | GraphQLOutputType) -> bool:
    return is_list_type(get_nullable_type(kind))


def _sizes(name: str, argument: GraphQLArgument) -> bool:
    """Whether ``argument`` sets how many items its field asks for: a page size, or a
    list (``checks``' items, ``checkMatrix``' ids and features)."""
    return name == PAGE_SIZE or _is_list(argument.type)


def _default(argument: GraphQLArgument) -> Any:
    """An argument's default as execution takes it: a literal (as a schema written in SDL
    states it), a value, or Undefined when it has none."""
    default = argument.default
    if default is None:
        return argument.default_value  # the older, coerced form (Strawberry's)
    return default.value if default.literal is None else default.literal


def _items(value: Any) -> int:
    """How many items a list argument given as ``value`` (a variable's JSON, or an
    argument's default) holds, as graphql-core coerces it: a collection its length, null
    none, anything else one."""
    if is_collection(value):
        return len(value)
    return 0 if value is None or value is Undefined else 1


def _defaults(operation: OperationDefinitionNode) -> dict[str, ValueNode]:
    """The default value of each of ``operation``'s variables that has one."""
    return {
        d.variable.name.value: d.default_value
        for d in operation.variable_definitions or ()
        if d.default_value is not None
    }
