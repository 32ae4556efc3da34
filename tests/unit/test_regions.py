from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidConfig
from app.domain.regions import (
    CACHE_SIZE,
    RegionMatcher,
    cidr,
    country_codes,
    networks,
    region_name,
)

COUNTRIES = {"85.214.132.117": "DE", "2a01:4f8::1": "DE", "8.8.8.8": "US", "1.0.16.1": "JP"}


def matcher(
    regions: list[tuple[list[str], list[str]]], asked: list[str] | None = None
) -> RegionMatcher:
    def country_of(address: str) -> str | None:
        if asked is not None:
            asked.append(address)
        return COUNTRIES.get(address)

    return RegionMatcher(regions, country_of)


def test_country_decides_when_no_network_holds_the_address() -> None:
    match = matcher([(["US"], []), (["DE", "FR"], [])])
    assert match("85.214.132.117") == 1
    assert match("2a01:4f8::1") == 1
    assert match("8.8.8.8") == 0
    assert match("1.0.16.1") is None


def test_network_wins_over_country_whatever_the_order_of_regions() -> None:
    match = matcher([(["DE"], []), ([], ["85.214.0.0/16"])])
    assert match("85.214.132.117") == 1


def test_most_specific_network_of_all_regions_wins() -> None:
    match = matcher([([], ["10.0.0.0/8"]), ([], ["10.20.0.0/16"]), ([], ["10.20.30.0/24"])])
    assert match("10.20.30.40") == 2
    assert match("10.20.99.1") == 1
    assert match("10.99.0.1") == 0
    assert match("11.0.0.1") is None


def test_ipv6_networks_and_ipv4_mapped_addresses_match() -> None:
    match = matcher([([], ["2001:db8::/32"]), ([], ["192.0.2.0/24"])])
    assert match("2001:db8:1::7") == 0
    assert match("2001:db9::1") is None
    assert match("::ffff:192.0.2.9") == 1


def test_private_and_unknown_addresses_have_no_country() -> None:
    asked: list[str] = []
    match = matcher([(["DE"], [])], asked)
    for address in ("10.1.2.3", "192.168.0.1", "127.0.0.1", "::1", "fd00::1", "not an ip", ""):
        assert match(address) is None
    assert asked == []


def test_private_address_can_still_belong_to_a_configured_network() -> None:
    assert matcher([(["DE"], ["10.20.0.0/16"])])("10.20.1.1") == 0


def test_repeated_address_is_answered_from_the_cache() -> None:
    asked: list[str] = []
    match = matcher([(["DE"], [])], asked)
    for _ in range(5):
        assert match("85.214.132.117") == 0
    assert asked == ["85.214.132.117"]
    match.forget()
    match("85.214.132.117")
    assert asked == ["85.214.132.117"] * 2


def test_cache_stays_bounded_with_many_distinct_addresses() -> None:
    match = matcher([([], ["10.0.0.0/8"])])
    for number in range(CACHE_SIZE + 1000):
        match(f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}")
    assert len(match._cache) == CACHE_SIZE


@pytest.mark.parametrize("name", ["", "EU", "eu west", "-eu", "x" * 33, "default", 7, None])
def test_region_name_is_refused_when_not_a_label(name: object) -> None:
    with pytest.raises(InvalidConfig, match="regions"):
        region_name(name, "regions[0].name")


@pytest.mark.parametrize("codes", [["de"], ["XX"], ["DEU"], ["DE", "DE"], "DE", [1], ["\uff24E"]])
def test_country_codes_are_refused_unless_iso_alpha2(codes: object) -> None:
    with pytest.raises(InvalidConfig):
        country_codes(codes, "regions[0].countries")


def test_country_codes_are_kept_in_order() -> None:
    assert country_codes(["DE", "FR", "GB"], "c") == ("DE", "FR", "GB")


@pytest.mark.parametrize(
    "blocks",
    [
        ["10.20.0.1/16"],
        ["10.20.0.0/33"],
        ["banana"],
        ["10.0.0.0/8", "10.0.0.0/8"],
        ["\uff110.0.0.0/8"],
        [None],
    ],
)
def test_networks_are_refused_unless_canonical_cidr(blocks: object) -> None:
    with pytest.raises(InvalidConfig):
        networks(blocks, "regions[0].networks")


def test_networks_are_stored_canonical() -> None:
    assert networks(["2001:DB8::/32", "10.20.0.0/16"], "n") == ("2001:db8::/32", "10.20.0.0/16")


def ip_network_reading(block: str) -> tuple[str, int, int, int] | str:
    """What `ip_network(block, strict=True)` makes of `block`: the network, or its error."""
    try:
        network = ip_network(block, strict=True)
    except ValueError as error:
        return str(error)
    return (str(network), network.max_prefixlen, int(network.network_address), network.prefixlen)


def spellings(address: str, exploded: str) -> st.SearchStrategy[str]:
    return st.sampled_from([address, address.upper(), exploded, f"::ffff:{address}"])


@st.composite
def blocks(draw: st.DrawFn) -> str:
    """CIDR blocks as admins write them, and as they should not: host bits set, prefixes
    too long or with a leading zero, netmasks, zones, IPv4 inside IPv6, junk."""
    if draw(st.booleans()):
        address: IPv4Address | IPv6Address = IPv4Address(draw(st.integers(0, 2**32 - 1)))
    else:  # anywhere, or where IPv4 addresses are written inside IPv6 ones
        low = draw(st.integers(0, 2**32 - 1))
        number = draw(st.sampled_from([draw(st.integers(0, 2**128 - 1)), 0xFFFF << 32 | low, low]))
        address = IPv6Address(number)
    length = draw(st.integers(0, address.max_prefixlen + 2))
    if draw(st.booleans()) and length <= address.max_prefixlen:  # host bits unset
        network = (
            int(address) >> (address.max_prefixlen - length) << (address.max_prefixlen - length)
        )
        address = type(address)(network)
    text = draw(spellings(str(address), address.exploded))
    suffix = draw(
        st.sampled_from(
            [f"/{length}", f"/0{length}", f"/{length}%", "", "/255.255.0.0", f"%eth0/{length}"]
        )
    )
    return draw(st.sampled_from([text + suffix, text + suffix + " ", f"x{text}{suffix}"]))


@given(blocks())
def test_a_block_is_read_as_ip_network_reads_it(block: str) -> None:
    """The inet_pton path for blocks written the usual way must not accept, refuse or write
    anything differently from ipaddress, which reads the rest."""
    try:
        found: tuple[str, int, int, int] | str = tuple(cidr(block))  # type: ignore[assignment]
    except ValueError as error:
        found = str(error)
    assert found == ip_network_reading(block)
