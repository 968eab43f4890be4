"""The helpers every store over a database server shares (features_gql.stores.network),
and the change-log rule of every store (check_not_trimmed). The stores themselves prove
them against real servers (tests/test_mongodb_store.py, tests/test_postgres_store.py:
the contract's NetworkStoreContract); these pin the rules down one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from features_gql.backoff import Backoff
from features_gql.errors import ChangesTrimmed, StoreConflict, StoreUnavailable
from features_gql.stores import check_not_trimmed
from features_gql.stores.network import PushedChanges, SetUpOnce, retry_conflicts

NO_WAIT = Backoff(0.0, 0.0)


class Conflict(Exception):
    pass


def test_a_hole_at_the_start_of_a_dense_log_is_a_trim() -> None:
    check_not_trimmed(5, None)
    check_not_trimmed(5, 6)
    with pytest.raises(ChangesTrimmed) as trimmed:
        check_not_trimmed(5, 8)
    assert (trimmed.value.after, trimmed.value.first_retained) == (5, 8)
    # A store that leaves holes of its own: only one below the trimmed revision is a trim.
    check_not_trimmed(5, 8, trimmed_through=5)
    with pytest.raises(ChangesTrimmed):
        check_not_trimmed(4, 8, trimmed_through=5)


async def test_conflicts_are_retried_then_given_up_as_store_conflicts() -> None:
    attempts: list[int] = []

    async def attempt() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise Conflict
        return "done"

    def conflict(exc: Exception, n: int) -> str | None:
        return "busy" if isinstance(exc, Conflict) else None

    assert await retry_conflicts("add", attempt, conflict=conflict, budget=5, backoff=NO_WAIT)
    assert attempts == [1, 2, 3]

    async def always() -> str:
        raise Conflict

    with pytest.raises(StoreConflict, match=r"add kept conflicting .* busy\)"):
        await retry_conflicts("add", always, conflict=conflict, budget=0.05, backoff=NO_WAIT)

    async def other() -> str:
        raise KeyError("not a conflict")

    with pytest.raises(KeyError):
        await retry_conflicts("add", other, conflict=conflict, budget=5, backoff=NO_WAIT)


async def test_callers_share_one_set_up_attempt_and_its_failure() -> None:
    runs = 0
    release = asyncio.Event()

    async def set_up() -> None:
        nonlocal runs
        runs += 1
        await release.wait()
        if runs == 1:
            raise StoreUnavailable("down")

    setup = SetUpOnce(set_up)
    waiting = [asyncio.ensure_future(setup()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert runs == 1
    assert all(isinstance(r, StoreUnavailable) for r in results)
    # A caller that gives up does not cancel the attempt the others wait for.
    release.clear()
    first = asyncio.ensure_future(setup())
    second = asyncio.ensure_future(setup())
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    await second
    assert runs == 2
    assert setup.ready
    await setup()
    assert runs == 2
    setup.again()
    await setup()
    assert runs == 3


async def test_a_lost_channel_is_reopened_with_a_notice_to_catch_up() -> None:
    notices: list[tuple[int, bool]] = []
    opens = 0

    async def follow(opened: Callable[[int], None], changed: Callable[[int, bool], None]) -> None:
        nonlocal opens
        opens += 1
        opened(opens * 10)
        changed(opens * 10 + 1, False)
        if opens < 3:
            raise StoreUnavailable("lost")
        # the third time: this store cannot push after all

    pushed = PushedChanges(follow, name="test", what="following", backoff=NO_WAIT)
    assert pushed.start(lambda revision, catalog: notices.append((revision, catalog)))
    async with asyncio.timeout(5):
        while opens < 3 or pushed.watching:
            await asyncio.sleep(0.01)
    assert notices == [(10, True), (11, False), (20, True), (21, False), (30, True), (31, False)]
    await pushed.stop()
