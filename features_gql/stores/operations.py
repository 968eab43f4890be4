"""The store's operations, declared once.

Every operation of :class:`~features_gql.stores.Store` is declared where the protocol
defines its method, by the :func:`operation` decorator, which says what kind of call it
is. Everything that treats operations alike derives from that one declaration
(:data:`~features_gql.stores.base.OPERATIONS`): :class:`~features_gql.stores.WrappingStore`
passes each call through one seam, ``around(op, call)``; the ``operations`` option of the
fault-injection stores takes their names and groups; the API knows which calls are
writes (a missed deadline may still have applied them).

Adding an operation to the protocol is: a decorated method on ``Store``, its one-line
delegation in ``WrappingStore`` (``name = through(Store.name)``; a test fails without
it), the stores that implement it, and a scenario of the contract suite.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

#: A store method: a coroutine function.
M = TypeVar("M", bound=Callable[..., Awaitable[Any]])

#: The attribute under which a method's declaration is kept.
DECLARATION = "__store_operation__"


class Kind(enum.Enum):
    #: Answers from the data; changes nothing.
    READ = "read"
    #: Changes the data and logs each change under its own revision.
    WRITE = "write"
    #: Retention work on the change log (trimming): no client asks for it.
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the store protocol."""

    #: The method's name.
    name: str
    kind: Kind
    #: Its name in operation events, logs and metrics (``features_of`` for
    #: ``features_of_many``, as it always was).
    event: str
    #: For a write: the GraphQL mutation field that asks for it.
    mutation: str | None = None

    @property
    def writes(self) -> bool:
        return self.kind is Kind.WRITE


def operation(
    kind: Kind, *, event: str | None = None, mutation: str | None = None
) -> Callable[[M], M]:
    """Declare the decorated ``Store`` method an operation of this kind."""

    def declare(method: M) -> M:
        name = method.__name__
        setattr(method, DECLARATION, Operation(name, kind, event or name, mutation))
        return method

    return declare


def declaration(method: object) -> Operation | None:
    """The operation ``method`` implements or intercepts, if it is declared one."""
    found = getattr(method, DECLARATION, None)
    return found if isinstance(found, Operation) else None


def declared_operations(cls: type) -> tuple[Operation, ...]:
    """The operations declared in the body of ``cls``, in the order they are defined."""
    found = (declaration(member) for member in vars(cls).values())
    return tuple(op for op in found if op is not None)
