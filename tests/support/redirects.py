"""Redirects asked of a running balancer, and where they went."""

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
CLOSE = {"Connection": "close"}  # a new connection per request: the kernel picks the worker


async def redirect_hosts(
    url: str,
    total: int,
    *,
    video: str = VIDEO,
    headers: Mapping[str, str] = CLOSE,
    concurrency: int = 8,
) -> list[str]:
    """The host each of `total` redirects of `video` went to, `concurrency` at a time."""
    hosts: list[str] = []

    async def run(client: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            response = await client.get("/", params={"video": video}, headers=headers)
            assert response.status_code == 301, response.text
            hosts.append(urlsplit(response.headers["location"]).netloc)

    async with httpx.AsyncClient(base_url=url) as client:
        await asyncio.gather(*(run(client, total // concurrency) for _ in range(concurrency)))
    return hosts


async def origin_pattern(client: httpx.AsyncClient, count: int) -> list[bool]:
    """`count` redirects of VIDEO one after another on `client`: True where one went to the
    origin."""
    pattern = []
    for _ in range(count):
        response = await client.get("/", params={"video": VIDEO})
        assert response.status_code == 301, response.text
        pattern.append(response.headers["location"] == VIDEO)
    return pattern
