import ipaddress

import pytest

from app.domain.ratelimit import (
    BLOCKED_RETRY_SECONDS,
    MAX_ALIASES,
    Bucket,
    ClientLimit,
    ClientLimiter,
    InvalidLimit,
    LimitTable,
    RateLimit,
    client_id_text,
    network_key,
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


def store(limiter: ClientLimiter, *overrides: ClientLimit) -> None:
    """Make `overrides` the stored ones, as a worker's full reload does, sweeps included."""
    resync = limiter.resync()
    resync.page((network_key(o.client_id), o.limit) for o in overrides)
    for _ in resync.finish():
        pass
    for _ in limiter.sweep():
        pass


def change(limiter: ClientLimiter, client_id: str, limit: RateLimit | None) -> None:
    """One override changed, as a worker applies a change it was told of."""
    limiter.change(network_key(parse_client_id(client_id)), limit)
    for _ in limiter.sweep():
        pass


def served(limiter: ClientLimiter, client: str, attempts: int) -> int:
    return sum(limiter.check(client) == 0.0 for _ in range(attempts))


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
    store(limiter, override("10.0.0.0/8", 1))
    change(limiter, "10.0.0.0/8", None)
    assert switches == [False, True, False, True, False]


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


# --- changes touch the buckets they decide only ------------------------------------------


def test_an_emptied_bucket_stays_empty_when_another_clients_override_is_created() -> None:
    limiter = ClientLimiter(Clock())
    store(limiter, override("192.0.2.1", 3, 0.001))
    assert served(limiter, "192.0.2.1", 5) == 3
    change(limiter, "192.0.2.2", RateLimit(10, 1.0))
    change(limiter, "198.51.100.0/24", RateLimit(10, 1.0))
    store(limiter, override("192.0.2.1", 3, 0.001), override("203.0.113.9", 1))
    assert served(limiter, "192.0.2.1", 5) == 0


def test_an_emptied_bucket_stays_empty_when_the_default_changes_under_an_override() -> None:
    limiter = ClientLimiter(Clock())
    store(limiter, override("192.0.2.1", 3, 0.001))
    served(limiter, "192.0.2.1", 5)
    limiter.set_default(RateLimit(100, 100.0))
    for _ in limiter.sweep():
        pass
    assert served(limiter, "192.0.2.1", 5) == 0


def test_a_replaced_override_gives_its_client_a_fresh_bucket_with_the_new_limit() -> None:
    limiter = ClientLimiter(Clock())
    store(limiter, override("192.0.2.1", 0))
    assert served(limiter, "192.0.2.1", 5) == 0
    change(limiter, "192.0.2.1", RateLimit(4, 0.001))
    assert served(limiter, "192.0.2.1", 10) == 4
    change(limiter, "192.0.2.1", None)
    assert served(limiter, "192.0.2.1", 10) == 10


def test_a_new_block_limits_the_clients_inside_it_and_spares_the_others() -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(3, 0.001))
    for client in ("10.1.0.1", "10.2.0.1"):
        served(limiter, client, 5)
    change(limiter, "10.1.0.0/16", RateLimit(0, 1.0))
    assert served(limiter, "10.1.0.1", 1) == 0
    assert served(limiter, "10.1.0.2", 1) == 0  # a client new to this worker too
    assert served(limiter, "10.2.0.1", 1) == 0  # outside it: still emptied, not refilled
    change(limiter, "10.1.0.0/16", None)
    assert served(limiter, "10.1.0.1", 5) == 3  # back to the default, afresh


def test_a_block_change_spares_the_clients_a_more_specific_override_decides() -> None:
    limiter = ClientLimiter(Clock())
    store(limiter, override("10.0.0.0/8", 5, 0.001), override("10.1.2.3", 2, 0.001))
    served(limiter, "10.1.2.3", 5)
    change(limiter, "10.0.0.0/8", RateLimit(50, 1.0))
    assert served(limiter, "10.1.2.3", 5) == 0


def test_a_full_reload_that_finds_nothing_new_changes_no_bucket() -> None:
    limiter = ClientLimiter(Clock())
    stored = [override("192.0.2.1", 2, 0.001), override("10.0.0.0/8", 2, 0.001)]
    store(limiter, *stored)
    for client in ("192.0.2.1", "10.9.9.9"):
        served(limiter, client, 5)
    store(limiter, *(override(client_id_text(o.client_id), 2, 0.001) for o in stored))
    assert served(limiter, "192.0.2.1", 1) + served(limiter, "10.9.9.9", 1) == 0
    store(limiter, stored[0])  # the block went away while this worker was not told
    assert served(limiter, "10.9.9.9", 5) == 5


def test_100000_overrides_are_looked_up_by_prefix_length_not_one_by_one() -> None:
    table = LimitTable(
        None,
        [override(str(ipaddress.IPv4Address(0x0A000000 + n)), 1) for n in range(100_000)]
        + [override("2001:db8::/32", 2), override("11.0.0.0/8", 3)],
    )
    assert len(table) == 100_002
    assert table.resolve("10.1.134.159") == RateLimit(1, 1.0)  # 10.0.0.0 + 99,999
    assert table.resolve("10.1.134.160") is None
    assert table.resolve("11.1.2.3") == RateLimit(3, 1.0)
    assert table.resolve("2001:db8:ffff::1") == RateLimit(2, 1.0)
    assert len(table._order) == 3


# --- identity: an IPv4 address, an IPv6 /64 ---------------------------------------------


def test_addresses_of_one_ipv6_64_share_one_bucket_when_the_client_rotates() -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(5, 0.001))
    rotating = [f"2001:db8:1:2:{n:x}::{n:x}" for n in range(1, 50)]
    assert sum(limiter.check(address) == 0.0 for address in rotating) == 5
    assert served(limiter, "2001:db8:1:3::1", 10) == 5  # the next /64 is another client


@pytest.mark.parametrize(
    "spellings",
    [
        ["2001:db8::1", "2001:0db8::1", "2001:DB8:0:0:0:0:0:1", "2001:db8::0:1"],
        ["192.0.2.1", "::ffff:192.0.2.1", "::FFFF:c000:201"],
        ["fe80::1", "fe80::1%eth0", "fe80::2%eth1"],
    ],
)
def test_spellings_of_one_address_share_one_bucket(spellings: list[str]) -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(6, 0.001))
    assert [limiter.check(spelling) == 0.0 for spelling in spellings * 3][6:] == [False] * (
        len(spellings) * 3 - 6
    )


def test_a_block_override_gives_each_64_inside_it_a_bucket_of_its_own() -> None:
    limiter = ClientLimiter(Clock())
    store(limiter, override("2001:db8::/48", 2, 0.001), override("198.51.100.0/24", 2, 0.001))
    assert served(limiter, "2001:db8:0:1::1", 5) == 2
    assert served(limiter, "2001:db8:0:1::2", 5) == 0
    assert served(limiter, "2001:db8:0:2::1", 5) == 2
    assert served(limiter, "198.51.100.1", 5) == 2
    assert served(limiter, "198.51.100.2", 5) == 2


@pytest.mark.parametrize(("prefix", "shared"), [(48, True), (64, False), (128, False)])
def test_the_ipv6_prefix_sets_how_much_of_an_address_is_the_client(
    prefix: int, shared: bool
) -> None:
    limiter = ClientLimiter(Clock(), ipv6_prefix=prefix)
    limiter.set_default(RateLimit(2, 0.001))
    served(limiter, "2001:db8:0:1::1", 2)
    assert (served(limiter, "2001:db8:0:2::1", 1) == 0) is shared
    assert (served(limiter, "2001:db8:0:1::2", 1) == 0) is (prefix < 128)


def test_an_override_more_specific_than_a_64_has_a_bucket_of_its_own() -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(2, 0.001))
    served(limiter, "2001:db8::1", 2)
    served(limiter, "2001:db8::5", 2)  # both spellings of the /64 client, now empty
    change(limiter, "2001:db8::5", RateLimit(100, 1.0))
    assert served(limiter, "2001:db8::5", 10) == 10
    assert served(limiter, "2001:db8::1", 1) == 0  # the rest of the /64 stays empty
    change(limiter, "2001:db8::5", None)
    assert served(limiter, "2001:db8::5", 1) == 0  # part of its /64 again


def test_the_spellings_remembered_stay_bounded_when_a_client_rotates_through_its_64() -> None:
    limiter = ClientLimiter(Clock())
    limiter.set_default(RateLimit(1_000_000, 1_000_000.0))
    for n in range(10_000):
        limiter.check(f"2001:db8::{n:x}")
    assert limiter.tracked <= MAX_ALIASES + 1
    limiter.check("2001:db8::ffff")
    assert limiter.tracked <= MAX_ALIASES + 1


def test_a_client_id_with_a_zone_is_refused() -> None:
    with pytest.raises(InvalidLimit) as error:
        parse_client_id("fe80::1%eth0")
    assert error.value.field == "client_id"
