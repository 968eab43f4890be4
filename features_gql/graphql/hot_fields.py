"""The hot fields' behaviour, defined once.

``hasFeature``, ``checks`` and ``checkMatrix`` are answered by two executors: Strawberry
(the general path) and the compiled fast path. Both call these functions, so what a hot
field does (which API call, how checks are batched) cannot drift between them; each
executor only adapts arguments in and shapes the answer out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from features_gql.graphql.context import Context


def has_feature(context: Context, type: str, id: str, feature: str) -> Awaitable[bool]:
    """One check. Every ``hasFeature`` of a request shares one store call.

    Not a coroutine function: the check is validated when it is asked, and the caller
    awaits the answer (one frame less on the hottest path).
    """
    return context.checks.check(type, id, feature)


async def checks(
    context: Context, types: Sequence[str], ids: Sequence[str], features: Sequence[str]
) -> list[bool]:
    """Many checks in one store call, in order: item i asks whether ``(types[i], ids[i])``
    has ``features[i]``. Columns rather than items, since both executors take the items
    apart anyway, and the fast path does it in C."""
    return await context.api.check_columns(types, ids, features)


async def check_matrix(
    context: Context, type: str, ids: Sequence[str], features: Sequence[str]
) -> list[list[bool]]:
    """For each id, whether ``(type, id)`` has each feature, in one store call."""
    return await context.api.check_matrix(type, ids, features)
