"""Which region a viewer belongs to: by the most specific configured network holding their
address, else by their country, else none (the default pool)."""

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import ip_network
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import NamedTuple

from iso3166 import countries_by_alpha2

from app.domain.errors import InvalidConfig
from app.domain.pacing import paced
from app.domain.pool import CdnPool
from app.domain.split import Split
from app.domain.steering import SteeringSettings

MAX_REGIONS = 64
MAX_NETWORKS = 10_000
DEFAULT_REGION = "default"
# Recent addresses and the region they resolved to; a hit costs one dict lookup.
CACHE_SIZE = 65_536

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?")
ISO_COUNTRIES = frozenset(countries_by_alpha2)


def region_name(name: object, field: str) -> str:
    """A label for metrics and logs: lower-case ASCII, digits, `-` and `_`, at most 32."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == DEFAULT_REGION:
        raise InvalidConfig(
            field,
            f"{name!r} is not a region name (a-z, 0-9, '-', '_', at most 32 characters; "
            f"'{DEFAULT_REGION}' is reserved)",
        )
    return name


def country_codes(codes: object, field: str) -> tuple[str, ...]:
    """ISO 3166-1 alpha-2 codes, upper case, each once."""
    if not isinstance(codes, list | tuple):
        raise InvalidConfig(field, "must be a list of ISO 3166-1 alpha-2 country codes")
    found: dict[str, None] = {}
    for code in codes:
        if not isinstance(code, str) or code not in ISO_COUNTRIES:
            raise InvalidConfig(field, f"{code!r} is not an ISO 3166-1 alpha-2 code like 'DE'")
        if code in found:
            raise InvalidConfig(field, f"{code} is listed twice")
        found[code] = None
    return tuple(found)


def networks(blocks: object, field: str) -> tuple[str, ...]:
    """CIDR blocks in canonical form (`10.20.0.0/16`, `2001:db8::/32`), host bits unset."""
    if not isinstance(blocks, list | tuple):
        raise InvalidConfig(field, "must be a list of CIDR blocks")
    if len(blocks) > MAX_NETWORKS:
        raise InvalidConfig(field, f"at most {MAX_NETWORKS} networks in all")
    found: dict[str, None] = {}
    for block in paced(blocks):
        if not isinstance(block, str) or not block.isascii() or len(block) > 64:
            raise InvalidConfig(field, f"{block!r} is not a CIDR block like '10.20.0.0/16'")
        try:
            canonical = cidr(block).text
        except ValueError as error:
            raise InvalidConfig(field, f"{block!r}: {error}") from None
        if canonical in found:
            raise InvalidConfig(field, f"{canonical} is listed twice")
        found[canonical] = None
    return tuple(found)


class Cidr(NamedTuple):
    """One CIDR block: its canonical text, its family's width (32 or 128), the network's
    first address as an integer and the prefix length."""

    text: str
    bits: int
    number: int
    prefix: int


_HEX_AND_COLONS = re.compile(r"[0-9A-Fa-f:]+")


@lru_cache(maxsize=MAX_NETWORKS)
def cidr(block: str) -> Cidr:
    """`block` as `ipaddress.ip_network(block, strict=True)` reads it (ValueError alike).

    Cached: a worker reads the same blocks in each version it loads and again to build
    its lookup tables."""
    usual = _usual_cidr(block)
    if usual is not None:
        return usual
    network = ip_network(block, strict=True)
    return Cidr(
        str(network), network.max_prefixlen, int(network.network_address), network.prefixlen
    )


def _usual_cidr(block: str) -> Cidr | None:
    """`block` read with inet_pton when it is written the usual way (`a.b.c.d/n`,
    `hex:hex::/n`), five times cheaper than ip_network; None for any other spelling (a
    netmask, a zone, an embedded IPv4 address, host bits set), which ip_network reads."""
    address, slash, length = block.partition("/")
    # `0` to `128` written plainly (ASCII digits, no leading zero), tested without a regex
    if not (slash and length.isascii() and length.isdigit() and len(length) <= 3) or (
        length[0] == "0" and length != "0"
    ):
        return None
    try:
        if ":" not in address:
            bits, packed = 32, inet_pton(AF_INET, address)
            text = inet_ntop(AF_INET, packed)
            usual = text == address
        else:
            bits, packed = 128, inet_pton(AF_INET6, address)
            text = inet_ntop(AF_INET6, packed)
            # RFC 5952 as ipaddress writes it, but for ::ffff:1.2.3.4 (ipaddress: ::ffff:102:304)
            usual = _HEX_AND_COLONS.fullmatch(address) is not None and "." not in text
    except (OSError, ValueError):
        return None
    prefix, number = int(length), int.from_bytes(packed, "big")
    if not usual or prefix > bits or number & ((1 << (bits - prefix)) - 1):
        return None
    return Cidr(f"{text}/{prefix}", bits, number, prefix)


_networks = networks


@dataclass(frozen=True, slots=True)
class Region:
    """Viewers matched by `networks` or `countries` go to `pool`; `split` None: the global
    CDN:origin split (counted on the region's own sequence either way)."""

    name: str
    pool: CdnPool
    countries: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    split: Split | None = None
    steering: SteeringSettings | None = None  # None: the global `content_steering`

    @classmethod
    def of(
        cls,
        index: int,
        *,
        name: object,
        countries: object,
        networks: object,
        hosts: Sequence[tuple[object, ...]],
        cdn_weight: object = None,
        origin_weight: object = None,
        content_steering: object = None,
    ) -> "Region":
        """Validate one entry of `regions`; errors name the field (`regions[1].countries`)."""
        field = f"regions[{index}]"
        split = None
        if (cdn_weight is None) != (origin_weight is None):
            raise InvalidConfig(f"{field}.origin_weight", "give both weights or neither")
        if cdn_weight is not None:
            try:
                split = Split(cdn_weight, origin_weight)  # type: ignore[arg-type]
            except InvalidConfig as error:
                detail = error.detail.partition(": ")[2]
                raise InvalidConfig(f"{field}.{error.field}", detail) from None
        return cls(
            name=region_name(name, f"{field}.name"),
            pool=CdnPool.of(hosts, f"{field}.cdn_hosts"),
            countries=country_codes(countries, f"{field}.countries"),
            networks=_networks(networks, f"{field}.networks"),
            split=split,
            steering=steering_settings(content_steering, f"{field}.content_steering"),
        )


def steering_settings(values: object, field: str) -> SteeringSettings | None:
    """A pool's own `content_steering` document (None: the pool has none)."""
    if values is None or isinstance(values, SteeringSettings):
        return values
    if not isinstance(values, dict):
        raise InvalidConfig(field, 'must be an object like {"enabled": true, "ttl_seconds": 10}')
    return SteeringSettings.of(values, field)


def check_regions(regions: object) -> tuple[Region, ...]:
    """The whole list: at most MAX_REGIONS, names unique, at most MAX_NETWORKS blocks, each
    block in one region only."""
    if not isinstance(regions, list | tuple):
        raise InvalidConfig("regions", "must be a list of regions")
    if len(regions) > MAX_REGIONS:
        raise InvalidConfig("regions", f"at most {MAX_REGIONS} regions")
    names: set[str] = set()
    blocks: dict[str, str] = {}
    for index, region in enumerate(regions):
        if not isinstance(region, Region):
            raise InvalidConfig(f"regions[{index}]", "must be a region")
        if region.name in names:
            raise InvalidConfig(f"regions[{index}].name", f"{region.name!r} is used twice")
        names.add(region.name)
        for block in paced(region.networks):
            if block in blocks:
                raise InvalidConfig(
                    f"regions[{index}].networks", f"{block} is already in region {blocks[block]}"
                )
            blocks[block] = region.name
    if len(blocks) > MAX_NETWORKS:
        raise InvalidConfig("regions", f"at most {MAX_NETWORKS} networks in all")
    return tuple(regions)


class _PrefixTable:
    """Longest-prefix match over the blocks of one address family: one dict per prefix
    length in use, probed from the longest length down."""

    __slots__ = ("_bits", "_by_length")

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._by_length: dict[int, dict[int, int]] = {}

    def add(self, network: "Cidr", region: int) -> None:
        table = self._by_length.setdefault(network.prefix, {})
        table.setdefault(network.number >> (self._bits - network.prefix), region)

    def freeze(self) -> None:
        self._by_length = dict(sorted(self._by_length.items(), reverse=True))

    def find(self, address: int) -> int | None:
        bits = self._bits
        for length, table in self._by_length.items():
            region = table.get(address >> (bits - length))
            if region is not None:
                return region
        return None


class RegionMatcher:
    """Addresses to region indexes (None: the default pool), with a cache of recent ones.

    `country_of(address)` is only asked on a cache miss and only when no network matched;
    private and unknown addresses have no country.
    """

    __slots__ = ("_by_country", "_cache", "_country_of", "_v4", "_v6")

    def __init__(
        self,
        regions: Sequence[tuple[Sequence[str], Sequence[str]]],
        country_of: Callable[[str], str | None],
    ) -> None:
        """`regions`: (countries, networks) per region, in the configured order."""
        self._v4 = _PrefixTable(32)
        self._v6 = _PrefixTable(128)
        self._by_country: dict[str, int] = {}
        for index, (countries, blocks) in enumerate(regions):
            for country in countries:
                self._by_country.setdefault(country, index)
            for block in paced(blocks):
                network = cidr(block)
                (self._v4 if network.bits == 32 else self._v6).add(network, index)
        self._v4.freeze()
        self._v6.freeze()
        self._country_of = country_of
        self._cache: OrderedDict[str, int | None] = OrderedDict()

    def forget(self) -> None:
        """Drop cached answers (the country database changed)."""
        self._cache = OrderedDict()

    def __call__(self, address: str) -> int | None:
        cache = self._cache
        try:
            return cache[address]
        except KeyError:
            pass
        region = self._resolve(address)
        if len(cache) >= CACHE_SIZE:
            cache.popitem(last=False)  # the oldest; a plain dict would scan its dead slots
        cache[address] = region
        return region

    def explain(self, address: str) -> tuple[int | None, str, str | None]:
        """(region, "network" | "country" | "default", the address's country), uncached."""
        parsed = _parse(address)
        if parsed is None:
            return None, DEFAULT_REGION, None
        version, number = parsed
        region = (self._v4 if version == 4 else self._v6).find(number)
        country = self.country(address)
        if region is not None:
            return region, "network", country
        region = None if country is None else self._by_country.get(country)
        return region, DEFAULT_REGION if region is None else "country", country

    def country(self, address: str) -> str | None:
        """The country the lookup gives `address`; None for private and unknown addresses."""
        return country_of(address, self._country_of)

    def _resolve(self, address: str) -> int | None:
        parsed = _parse(address)
        if parsed is None:
            return None
        version, number = parsed
        region = (self._v4 if version == 4 else self._v6).find(number)
        if region is not None or not self._by_country:
            return region
        if (_NOT_GLOBAL_V4 if version == 4 else _NOT_GLOBAL_V6).find(number) is not None:
            return None
        country = self._country_of(
            address if version == 6 or ":" not in address else _v4_text(number)
        )
        return None if country is None else self._by_country.get(country)


def country_of(address: str, lookup: Callable[[str], str | None]) -> str | None:
    """`lookup(address)` for globally reachable addresses only (not private, loopback...)."""
    parsed = _parse(address)
    if parsed is None:
        return None
    version, number = parsed
    if (_NOT_GLOBAL_V4 if version == 4 else _NOT_GLOBAL_V6).find(number) is not None:
        return None
    return lookup(address if version == 6 or ":" not in address else _v4_text(number))


def _parse(address: str) -> tuple[int, int] | None:
    """(4 or 6, the address as an integer); an IPv4-mapped IPv6 address counts as IPv4.
    inet_pton is ten times cheaper than ipaddress.ip_address on this path."""
    try:
        if ":" in address:
            number = int.from_bytes(inet_pton(AF_INET6, address), "big")
            if number >> 32 == 0xFFFF:
                return 4, number & 0xFFFFFFFF
            return 6, number
        return 4, int.from_bytes(inet_pton(AF_INET, address), "big")
    except (OSError, ValueError):
        return None


def _v4_text(number: int) -> str:
    return inet_ntop(AF_INET, number.to_bytes(4, "big"))


def _special(blocks: tuple[str, ...], bits: int) -> _PrefixTable:
    table = _PrefixTable(bits)
    for block in blocks:
        table.add(cidr(block), 0)
    table.freeze()
    return table


# Special-purpose blocks that are not globally reachable (RFC 6890 and its IANA registries):
# private, loopback, link-local, shared (CGNAT), documentation, benchmarking, multicast,
# reserved. No country is looked up for them.
_NOT_GLOBAL_V4 = _special(
    (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    ),
    32,
)
_NOT_GLOBAL_V6 = _special(
    (
        "::/127",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ),
    128,
)
