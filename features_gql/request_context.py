"""Per-request correlation that follows a request into every store operation it causes.

The HTTP side passes a request's state explicitly (``http/pipeline.py``'s
``RequestScope``, on the request). These variables are its only channel into the core:
the store calls a request causes are made far below any argument an entrance could pass
them, in a ``FeaturesAPI`` and stores shared by every request. The observer sets the
first two from the scope; the GraphQL view sets the third.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from features_gql.events import OperationEvent

#: Set by the driving adapter (HTTP middleware) for the duration of one request.
request_id: ContextVar[str | None] = ContextVar("features_gql_request_id", default=None)

#: The store operations the current request caused, for its slow-request warning.
request_operations: ContextVar[list[OperationEvent] | None] = ContextVar(
    "features_gql_request_operations", default=None
)

#: The ``Authorization`` header of the current request, as sent: an edge forwards a
#: caller's writes to its upstream with the caller's own credentials.
request_credentials: ContextVar[str | None] = ContextVar(
    "features_gql_request_credentials", default=None
)
