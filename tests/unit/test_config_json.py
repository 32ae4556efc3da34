"""A configuration's JSON as the admin API serves it: written from plain documents, in
pieces, byte for byte what the ConfigBody model would write; request bodies read in pieces
as json.loads reads them."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import to_json

from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.pool import CdnPool
from app.domain.ratelimit import RateLimit
from app.domain.regions import Region
from app.domain.split import Split
from app.presentation.api.json_pieces import dumps_in_pieces, loads_in_pieces
from app.presentation.api.schemas import ConfigBody, ConfigPatch, config_document
from tests.support import largest
from tests.support.fakes import DEFAULT


def pool(prefix: str, size: int) -> CdnPool:
    return CdnPool.of((f"{prefix}-{n}.example.com", 1) for n in range(size))


def rich_version() -> ConfigVersion:
    config = BalancerConfig(
        cdn_host="x",
        split=Split(9, 1),
        cdn_hosts=pool("g", 3),
        server_rules={"s7": Split(0, 1), "s8": Split(2, 1)},
        server_pools={"s8": pool("s8", 2)},
        down_servers=("s9",),
        cdn_health=HealthSettings(enabled=False, path="/health", fall=5),
        rate_limit=RateLimit(10, 2.5),
        regions=(
            Region("eu", pool("eu", 2), ("DE",), ("10.0.0.0/8",), Split(3, 1)),
            Region("us", pool("us", 1), (), ("2001:db8::/32",)),
        ),
    )
    return ConfigVersion(7, config, datetime(2026, 5, 1, 12, tzinfo=UTC), "caf\u00e9 \u2713")


def test_the_served_json_is_exactly_what_the_config_body_model_writes() -> None:
    served = dumps_in_pieces(config_document(rich_version()))
    assert ConfigBody.model_validate_json(served).model_dump_json().encode() == served


def test_the_largest_config_is_served_as_json_of_its_own_values() -> None:
    body = largest.largest_config("served")
    config = ConfigPatch.model_validate(body).to_change().apply(DEFAULT)
    served = json.loads(
        dumps_in_pieces(config_document(ConfigVersion(3, config, datetime.now(UTC))))
    )
    assert len(served["server_rules"]) == len(body["server_rules"])
    assert served["regions"][5]["networks"] == body["regions"][5]["networks"]
    assert served["down_servers"] == sorted(body["down_servers"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(json_values, st.sampled_from([None, 1, 2, "\t", "  "]), st.integers(0, 3))
def test_json_read_in_pieces_is_what_json_loads_reads(
    value: Any, indent: int | str | None, depth: int
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    assert loads_in_pieces(text, depth) == json.loads(text)


@given(json_values, st.integers(0, 3))
def test_json_written_in_pieces_is_byte_for_byte_what_to_json_writes(
    value: Any, depth: int
) -> None:
    assert dumps_in_pieces(value, depth) == to_json(value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        '{"a" 1}',
        '{"a": 1,}',
        '{"a": 1 "b": 2}',
        "[1, 2",
        "[1 2]",
        "[1,]",
        "{1: 2}",
        "[] x",
    ],
)
def test_malformed_json_read_in_pieces_fails_as_json_loads_does(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as found:
        loads_in_pieces(text)
    assert (found.value.msg, found.value.pos) == (expected.value.msg, expected.value.pos)
