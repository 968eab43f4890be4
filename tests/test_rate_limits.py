"""Token buckets (features_gql/rate_limits.py) on a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features_gql import rate_limits
from features_gql.http.connections import client_key
from features_gql.rate_limits import Limiter, Rate, RateLimits, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(rate_limits, "_now", clock)
    return clock


def test_a_full_bucket_allows_its_burst_then_waits_for_the_rate(clock: Clock) -> None:
    limiter = Limiter(Rate(2, 3))
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # one token at 2 a second
    clock.now += 0.25
    assert limiter.take("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)


def test_buckets_are_per_key(clock: Clock) -> None:
    limiter = Limiter(Rate(1, 1))
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_refill_stops_at_the_burst(clock: Clock) -> None:
    limiter = Limiter(Rate(10, 2))
    limiter.take("a")
    clock.now += 3600
    assert [limiter.take("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.take("a") > 0


def test_an_amount_larger_than_the_burst_waits_for_a_full_bucket_then_pays(clock: Clock) -> None:
    limiter = Limiter(Rate(100, 100))
    assert limiter.take("a", 10) == 0.0
    # 90 left: 250 waits until the bucket is full again (0.1 s), never forever.
    assert limiter.take("a", 250) == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.take("a", 250) == 0.0
    # Paid for: the bucket is 150 below zero, 2.5 s of refill before the next byte.
    assert limiter.take("a", 1) == pytest.approx(1.51)


def test_the_table_forgets_the_least_recently_seen_key(clock: Clock) -> None:
    limiter = Limiter(Rate(1, 1), max_keys=2)
    limiter.take("a")
    limiter.take("b")
    limiter.take("a")  # a is now the most recent
    limiter.take("c")  # b is forgotten
    assert len(limiter) == 2
    assert limiter.take("a") > 0  # still empty: remembered
    assert limiter.take("b") == 0.0  # a full bucket again: forgotten


@given(
    rate=st.floats(0.5, 1000),
    burst=st.floats(1, 1000),
    steps=st.lists(st.tuples(st.floats(0, 5), st.floats(0.1, 50)), max_size=60),
)
def test_what_is_granted_never_exceeds_burst_plus_rate_times_time(
    rate: float, burst: float, steps: list[tuple[float, float]]
) -> None:
    clock = Clock()
    saved = rate_limits._now
    rate_limits._now = clock
    try:
        limiter = Limiter(Rate(rate, burst))
        granted = 0.0
        elapsed = 0.0
        largest = 0.0
        for pause, amount in steps:
            clock.now += pause
            elapsed += pause
            largest = max(largest, amount)
            wait = limiter.take("k", amount)
            assert wait >= 0
            if wait == 0.0:
                granted += amount
            else:
                # Never longer than a full bucket takes to refill from the lowest a request
                # larger than the bucket may have left it.
                assert wait <= max(burst, largest) / rate + 1e-9
        # Only what the bucket held at the start plus its refill, give or take the one
        # request larger than a full bucket that may drive it below zero.
        assert granted <= burst + rate * elapsed + max(0.0, largest - burst) + 1e-6
    finally:
        rate_limits._now = saved


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.0, "1"), (0.001, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")]
)
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after(seconds) == header


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("", ""),
        ("not an address:", "not an address:"),
    ],
)
def test_clients_are_keyed_by_address_and_ipv6_by_its_64(address: str, key: str) -> None:
    assert client_key(address) == key


def test_off_switches_every_limit_off() -> None:
    off = RateLimits.off()
    assert off.per_token.unlimited
    assert off.per_address.unlimited
    assert off.parse_seconds.unlimited
    assert not RateLimits().per_token.unlimited


def test_a_charge_after_the_fact_drives_the_bucket_below_zero(clock: Clock) -> None:
    limiter = Limiter(Rate(1, 2))
    limiter.charge("a", 5.0)  # a key never seen: a full bucket of 2, less 5
    assert limiter.take("a", 0.0) == pytest.approx(3.0)
    clock.now += 3.0
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("b", 0.0) == 0.0  # other keys are not charged
