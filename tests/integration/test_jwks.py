"""The JWKS cache on its own, against a JWKS served by the test."""

import asyncio

from app.infrastructure.jwt_verifier import JwksKeys
from tests.support.jwks import SigningKey, jwks_server

KEY = SigningKey.make("k1", "ES256")


async def test_known_keys_are_refreshed_in_the_background_once_stale() -> None:
    with jwks_server([KEY]) as idp:
        keys = JwksKeys(idp.url, refetch_seconds=0, lifespan_seconds=0)
        assert await keys.find("k1") is not None
        idp.keys = []  # the provider revoked it
        # Answered from memory while the refresh runs; the refresh then drops the key.
        assert await keys.find("k1") is not None
        for _ in range(100):
            if await keys.find("k1") is None:
                break
            await asyncio.sleep(0.02)
        assert await keys.find("k1") is None
        assert idp.fetches >= 2


async def test_a_token_without_kid_uses_the_only_key() -> None:
    with jwks_server([KEY]) as idp:
        keys = JwksKeys(idp.url, refetch_seconds=0)
        assert await keys.find(None) is not None
    with jwks_server([KEY, SigningKey.make("k2", "ES256")]) as idp:
        keys = JwksKeys(idp.url, refetch_seconds=60)
        assert await keys.find(None) is None  # two keys: the kid must say which
        assert idp.fetches == 1


async def test_an_unreadable_jwks_is_no_key_not_an_error() -> None:
    with jwks_server([KEY]) as idp:
        idp.down = True
        keys = JwksKeys(idp.url, refetch_seconds=0, timeout_seconds=1)
        assert await keys.find("k1") is None
    keys = JwksKeys("http://127.0.0.1:9/jwks.json", refetch_seconds=0, timeout_seconds=1)
    assert await keys.find("k1") is None
