import ipaddress

import pytest

from app.domain.ratelimit import (
    BLOCKED_RETRY_SECONDS,
    Bucket,
    ClientLimit,
    ClientLimiter,
    InvalidLimit,
    LimitTable,
    RateLimit,
    client_id_text,
    parse_client_id,
    retry_after_seconds,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def override(client_id: str, capacity: int, refill: float = 1.0) -> ClientLimit:
    return ClientLimit(parse_client_id(client_id), RateLimit(capacity, refill))


def admitted(bucket: Bucket, now: float, attempts: int) -> int:
    return sum(bucket.take(now) == 0.0 for _ in range(attempts))


# --- the bucket ------------------------------------------------------------------------


def test_a_new_bucket_admits_its_capacity_at_once_then_refuses_when_burst() -> None:
    bucket = Bucket("c", RateLimit(5, 1.0), now=0.0)
    assert admitted(bucket, 0.0, 10) == 5


def test_tokens_come_back_at_the_refill_rate_when_time_passes() -> None:
    bucket = Bucket("c", RateLimit(10, 4.0), now=0.0)
    admitted(bucket, 0.0, 10)
    assert admitted(bucket, 0.5, 10) == 2
    assert admitted(bucket, 1.5, 10) == 4


def test_refill_never_exceeds_capacity_when_idle_for_long() -> None:
    bucket = Bucket("c", RateLimit(3, 100.0), now=0.0)
    admitted(bucket, 0.0, 3)
    assert admitted(bucket, 10_000.0, 10) == 3


def test_decimal_refill_rates_accumulate_fractions_when_time_passes() -> None:
    bucket = Bucket("c", RateLimit(1, 0.25), now=0.0)
    assert admitted(bucket, 0.0, 2) == 1
    assert admitted(bucket, 3.9, 1) == 0
    assert admitted(bucket, 4.0, 1) == 1


def test_wait_is_the_time_until_the_next_token_when_refused() -> None:
    bucket = Bucket("c", RateLimit(2, 4.0), now=0.0)
    admitted(bucket, 0.0, 2)
    assert bucket.take(0.0) == pytest.approx(0.25)
    assert bucket.take(0.1) == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, 1), (0.25, 1), (1.0, 1), (1.01, 2), (59.2, 60)]
)
def test_retry_after_is_whole_seconds_and_at_least_one_when_refused(
    wait: float, header: int
) -> None:
    assert retry_after_seconds(wait) == header


def test_capacity_zero_blocks_with_a_long_retry_after_when_configured() -> None:
    bucket = Bucket("c", RateLimit(0, 1000.0), now=0.0)
    assert bucket.take(0.0) == BLOCKED_RETRY_SECONDS
    assert bucket.take(1e6) == BLOCKED_RETRY_SECONDS


def test_a_clock_that_goes_back_neither_refills_nor_drains_when_it_jumps() -> None:
    bucket = Bucket("c", RateLimit(4, 1.0), now=100.0)
    admitted(bucket, 100.0, 2)
    assert admitted(bucket, 50.0, 10) == 2  # back 50 s: still the 2 left, none added
    assert admitted(bucket, 51.0, 10) == 1  # and refill resumes from the new reading


def test_a_clock_jump_forward_refills_at_most_to_capacity_when_it_jumps() -> None:
    bucket = Bucket("c", RateLimit(4, 1.0), now=0.0)
    admitted(bucket, 0.0, 4)
    assert admitted(bucket, 86_400.0 * 365, 10) == 4


def test_settlement_clamps_the_bucket_to_the_global_balance_when_lower() -> None:
    bucket = Bucket("c", RateLimit(10, 1.0), now=0.0)
    admitted(bucket, 0.0, 2)
    bucket.unsettled = 1  # admitted after the report left
    bucket.settled(-3.0, now=0.0)  # other workers spent it all, and more
    assert bucket.take(0.0) == pytest.approx(5.0)  # -4 tokens: 5 s to one token
    assert admitted(bucket, 5.0, 3) == 1


def test_settlement_never_raises_the_local_balance_when_the_global_is_higher() -> None:
    bucket = Bucket("c", RateLimit(10, 1.0), now=0.0)
    admitted(bucket, 0.0, 8)
    bucket.settled(10.0, now=0.0)
    assert admitted(bucket, 0.0, 10) == 2


# --- limits and client ids -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7/32", "203.0.113.7"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_client_ids_are_spelled_canonically_when_parsed(raw: str, canonical: str) -> None:
    assert client_id_text(parse_client_id(raw)) == canonical


@pytest.mark.parametrize(
    "raw", ["", "example.com", "10.0.0.1/8", "300.1.1.1", "10.0.0.0/33", "::ffff:1.2.3.4", "1" * 80]
)
def test_bad_client_ids_are_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(InvalidLimit) as error:
        parse_client_id(raw)
    assert error.value.field == "client_id"


@pytest.mark.parametrize(
    ("capacity", "refill", "field"),
    [
        (-1, 1.0, "capacity"),
        (1_000_001, 1.0, "capacity"),
        (1.5, 1.0, "capacity"),
        (True, 1.0, "capacity"),
        (1, 0.0, "refill_per_second"),
        (1, -1.0, "refill_per_second"),
        (1, 1_000_000.5, "refill_per_second"),
        (1, float("nan"), "refill_per_second"),
        (1, float("inf"), "refill_per_second"),
    ],
)
def test_out_of_range_limits_are_refused_naming_the_field(
    capacity: int, refill: float, field: str
) -> None:
    with pytest.raises(InvalidLimit) as error:
        RateLimit(capacity, refill)
    assert error.value.field == field


def test_the_most_specific_block_wins_when_blocks_nest() -> None:
    table = LimitTable(
        RateLimit(100, 50.0),
        [override("10.0.0.0/8", 1), override("10.1.0.0/16", 2), override("10.1.2.3", 3)],
    )
    assert table.resolve("10.1.2.3") == RateLimit(3, 1.0)
    assert table.resolve("10.1.9.9") == RateLimit(2, 1.0)
    assert table.resolve("10.200.0.1") == RateLimit(1, 1.0)
    assert table.resolve("11.0.0.1") == RateLimit(100, 50.0)


def test_ipv6_blocks_match_any_spelling_of_an_address() -> None:
    table = LimitTable(None, [override("2001:db8::/32", 7), override("2001:db8:1::5", 8)])
    assert table.resolve("2001:DB8:0:0:0:0:0:1") == RateLimit(7, 1.0)
    assert table.resolve("2001:db8:1:0::5") == RateLimit(8, 1.0)
    assert table.resolve("2001:db9::1") is None


def test_ipv4_mapped_peers_match_ipv4_overrides() -> None:
    table = LimitTable(None, [override("192.0.2.0/24", 4)])
    assert table.resolve("::ffff:192.0.2.10") == RateLimit(4, 1.0)


def test_an_address_outside_every_block_gets_the_default_or_no_limit() -> None:
    assert LimitTable(None, [override("10.0.0.0/8", 1)]).resolve("192.0.2.1") is None
    assert LimitTable(None, []).enabled is False
    assert LimitTable(RateLimit(1, 1.0), []).resolve("not-an-ip") == RateLimit(1, 1.0)


# --- the limiter -------------------------------------------------------------------------


def test_nothing_is_limited_or_tracked_when_no_limit_is_configured() -> None:
    limiter = ClientLimiter(Clock())
    switches: list[bool] = []
    limiter.watch(switches.append)
    assert switches == [False]
    assert limiter.check("192.0.2.1") == 0.0


def test_the_front_is_told_when_limits_switch_on_and_off() -> None:
    limiter = ClientLimiter(Clock())
    switches: list[bool] = []
    limiter.watch(switches.append)
    limiter.set_default(RateLimit(1, 1.0))
    limiter.set_default(None)
    limiter.set_overrides([override("10.0.0.0/8", 1)])
    assert switches == [False, True, False, True]


def test_each_client_has_a_bucket_of_its_own_when_limited_by_default() -> None:
    clock = Clock()
    limiter = ClientLimiter(clock)
    limiter.set_default(RateLimit(2, 1.0))
    assert [limiter.check("192.0.2.1") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.check("192.0.2.1") > 0
    assert limiter.check("192.0.2.2") == 0.0
    clock.now += 1
    assert limiter.check("192.0.2.1") == 0.0


def test_admissions_are_queued_for_settlement_and_urgent_past_the_threshold() -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(100, 100.0))  # threshold: 5% of 200 = 10
    woken: list[int] = []
    limiter.on_urgent(lambda: woken.append(1))
    for _ in range(9):
        limiter.check("192.0.2.1")
    assert [b.fold() for b in limiter.dirty] == [9]
    assert limiter.urgent == []
    assert woken == []
    limiter.check("192.0.2.1")
    assert [b.fold() for b in limiter.urgent] == [10]
    assert woken == [1]
    assert len(limiter.take_dirty()) == 1
    assert limiter.dirty == []


class CountingClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def test_a_client_below_its_threshold_spends_credit_without_reading_the_clock() -> None:
    clock = CountingClock()
    limiter = ClientLimiter(clock)
    limiter.set_default(RateLimit(100, 100.0))  # threshold: 5% of 200 = 10
    limiter.check("192.0.2.1")  # a new bucket: the clock for its stamp and for the grant
    reads = clock.reads
    for _ in range(8):
        assert limiter.check("192.0.2.1") == 0.0
    assert clock.reads == reads  # admissions 2 to 9: credit
    limiter.check("192.0.2.1")  # the 10th reaches the threshold: the slow path
    assert clock.reads == reads + 1
    assert [b.fold() for b in limiter.urgent] == [10]


def test_credit_is_never_more_than_the_tokens_left() -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(5, 0.001))  # threshold 1: no credit; every check counts
    assert [limiter.check("192.0.2.1") == 0.0 for _ in range(7)] == [True] * 5 + [False] * 2
    limiter.set_default(RateLimit(10, 1000.0))  # threshold 50: the tokens run out first
    assert sum(limiter.check("192.0.2.2") == 0.0 for _ in range(15)) == 10


def test_settlement_reports_spent_credit_and_takes_back_the_rest() -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(100, 100.0))
    for _ in range(4):
        limiter.check("192.0.2.1")
    [bucket] = limiter.take_dirty()
    assert bucket.unsettled == 4  # what is reported: admissions, not credit handed out
    assert bucket.credit == 0
    assert bucket.tokens == 96.0  # the unspent credit is back
    bucket.unsettled = 0  # reported
    for _ in range(3):  # admitted while the report is out: one token, then credit
        limiter.check("192.0.2.1")
    bucket.settled(50.0, now=1000.0)  # the global balance after the report
    admitted = sum(limiter.check("192.0.2.1") == 0.0 for _ in range(100))
    assert admitted == 47  # 50 less the 3 admitted since: no credit outlives the clamp


def test_tracked_clients_stay_bounded_when_a_million_addresses_pass() -> None:
    limiter = ClientLimiter(Clock(), max_clients=1000)
    limiter.set_default(RateLimit(10, 1.0))
    for number in range(1_000_000):
        limiter.check(str(ipaddress.IPv4Address(number + 1)))
        if number % 10_000 == 0:
            limiter.take_dirty()
    assert limiter.tracked <= 1000


def test_a_recently_seen_client_keeps_its_bucket_when_others_push_the_old_out() -> None:
    limiter = ClientLimiter(Clock(), max_clients=10)
    limiter.set_default(RateLimit(1, 0.001))
    assert limiter.check("192.0.2.1") == 0.0
    for number in range(4):
        limiter.check(f"198.51.100.{number}")
        limiter.check("192.0.2.1")  # seen again: moved to the new generation
    assert limiter.check("192.0.2.1") > 0  # still empty: its bucket was kept


def test_idle_buckets_are_dropped_after_two_idle_periods() -> None:
    clock = Clock()
    limiter = ClientLimiter(clock, idle_seconds=60)
    limiter.set_default(RateLimit(1, 1.0))
    limiter.check("192.0.2.1")
    clock.now += 61
    limiter.expire()
    assert limiter.tracked == 1
    clock.now += 61
    limiter.expire()
    assert limiter.tracked == 0
