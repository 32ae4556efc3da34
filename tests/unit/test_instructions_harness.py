"""`python -m loadtest.instructions` weighs what each mode's requests go through."""

import asyncio

import pytest

from loadtest.instructions import MODES, feed


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_request_of_a_mode_is_answered_by_the_protocol_through_its_features(
    mode: str,
) -> None:
    forwarded, limited, counted, regional = MODES[mode]
    tally, limiter = asyncio.run(feed(mode, 2_500))  # the app behind would raise
    assert (tally is not None) is counted
    if tally is not None:
        assert sum(tally.redirects.values()) == 2_500
        tally.fold()
        regions = {key[3] for key in tally.redirects}  # (target, cdn, status, region)
        assert regions == ({"eu", "us", "apac", "default"} if regional else {"default"})
    # 2,000 forwarded clients each have a bucket; without the header, one peer has one
    assert limiter.tracked == (2_000 if forwarded else 1) * limited
