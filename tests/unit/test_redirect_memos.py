"""The redirect path's memos (query -> video in the front, video -> parsed parts in the
router, location -> header lines in the edge protocol): bounded whatever is sent, emptied
by a new configuration, and keyed by exact input, so no request can change another's answer."""

import asyncio

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig
from app.domain.errors import InvalidVideoUrl
from app.domain.pool import CdnPool
from app.domain.router import LOCATION_MEMO_SIZE as ROUTER_LOCATIONS
from app.domain.router import VIDEO_MEMO_KEY_LENGTH, VIDEO_MEMO_SIZE, Redirect
from app.domain.split import Split
from app.presentation.edge.protocol import LOCATION_MEMO_SIZE, EdgeProtocol
from app.presentation.edge.redirect import (
    QUERY_MEMO_KEY_BYTES,
    QUERY_MEMO_SIZE,
    RedirectFront,
    Refusal,
)
from tests.support.fakes import CountingSequence, version

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
CDN_ONLY = BalancerConfig(cdn_host="cdn.example.com", split=Split(1, 0))


def serving(config: BalancerConfig = CDN_ONLY) -> tuple[RedirectVideo, ConfigSnapshot]:
    snapshot = ConfigSnapshot()
    snapshot.offer(version(1, config))
    return RedirectVideo(snapshot, CountingSequence()), snapshot


def front_of(redirect: RedirectVideo) -> RedirectFront:
    front = RedirectFront(lambda scope, receive, send: None)  # type: ignore[arg-type,return-value]
    front.bind(redirect)
    return front


def test_a_remembered_url_is_routed_by_the_new_version_once_it_is_served() -> None:
    redirect, snapshot = serving()
    assert redirect(VIDEO).location == "http://cdn.example.com/s1/video/1488/xcg2djHckad.m3u8"
    snapshot.offer(version(2, BalancerConfig(cdn_host="cdn.example.com", split=Split(0, 1))))
    assert redirect(VIDEO).location == VIDEO
    rules = {"s1": Split(1, 0)}
    snapshot.offer(
        version(3, BalancerConfig(cdn_host="b.example.com", split=Split(0, 1), server_rules=rules))
    )
    assert redirect(VIDEO).location == "http://b.example.com/s1/video/1488/xcg2djHckad.m3u8"
    snapshot.offer(
        version(
            4,
            BalancerConfig(
                cdn_host="b.example.com", split=Split(1, 0), origin_domains=("other-cluster",)
            ),
        )
    )
    with pytest.raises(InvalidVideoUrl):
        redirect(VIDEO)


@pytest.mark.parametrize(
    "hostile",
    [
        "http://s1.origin-cluster.evil.example/video/1488/xcg2djHckad.m3u8",
        "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8/../../x",
        "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8\r\nx: y",
        "http://s1.origin-cluster@evil.example/video/1488/xcg2djHckad.m3u8",
        "http://s1.origin-cluster:99999/video/1488/xcg2djHckad.m3u8",
    ],
)
def test_a_url_close_to_a_remembered_one_is_checked_on_its_own(hostile: str) -> None:
    redirect, _ = serving()
    valid = redirect(VIDEO)
    with pytest.raises(InvalidVideoUrl):
        redirect(hostile)
    with pytest.raises(InvalidVideoUrl):
        redirect(hostile)  # a refusal is not remembered either
    assert redirect(VIDEO) == valid


def test_the_router_remembers_a_bounded_number_of_short_urls() -> None:
    redirect, snapshot = serving()
    for number in range(VIDEO_MEMO_SIZE + 100):
        redirect(f"http://s1.origin-cluster/v/{number}.ts")
    long_url = "http://s1.origin-cluster/" + "a" * VIDEO_MEMO_KEY_LENGTH
    assert redirect(long_url).location.endswith("a" * VIDEO_MEMO_KEY_LENGTH)
    videos = snapshot.router._videos
    assert 0 < len(videos) <= VIDEO_MEMO_SIZE
    assert long_url not in videos


def test_the_router_remembers_a_bounded_number_of_locations_over_all_its_urls() -> None:
    hosts = [(f"c{number}.example.com", 1) for number in range(8)]
    config = BalancerConfig(
        cdn_host="c0.example.com", split=Split(1, 0), cdn_hosts=CdnPool.of(hosts)
    )
    redirect, snapshot = serving(config)
    for number in range(VIDEO_MEMO_SIZE - 1):
        for _ in range(8):
            location = redirect(f"http://s1.origin-cluster/v/{number}.ts").location
            assert location.endswith(f"/s1/v/{number}.ts")
    videos = snapshot.router._videos.values()
    assert sum(len(video.locations) for video in videos) == ROUTER_LOCATIONS


def test_a_url_remembered_goes_over_every_host_of_the_pool_by_weight() -> None:
    pool = CdnPool.of([("a.example.com", 3), ("b.example.com", 2), ("c.example.com", 1)])
    config = BalancerConfig(cdn_host="a.example.com", split=Split(1, 0), cdn_hosts=pool)
    redirect, _ = serving(config)
    hosts = [redirect(VIDEO).location.split("/")[2] for _ in range(60)]
    assert (hosts.count("a.example.com"), hosts.count("b.example.com")) == (30, 20)
    assert hosts.count("c.example.com") == 10


def test_the_front_remembers_a_bounded_number_of_short_queries() -> None:
    front = front_of(serving()[0])
    for number in range(QUERY_MEMO_SIZE + 100):
        front.answer("GET", b"video=http://s1.origin-cluster/v/%d.ts" % number, "")
    long_query = b"video=http://s1.origin-cluster/" + b"a" * QUERY_MEMO_KEY_BYTES
    assert isinstance(front.answer("GET", long_query, ""), Redirect)
    assert 0 < len(front._videos) <= QUERY_MEMO_SIZE
    assert long_query not in front._videos


@pytest.mark.parametrize(
    "hostile",
    [
        b"video=http%3A%2F%2Fs1.origin-cluster.evil.example%2Fvideo%2F1488%2Fx.m3u8",
        b"video=http://s1.origin-cluster%2Eevil.example/video/1488/xcg2djHckad.m3u8",
        b"video=http://s1.origin-cluster/video/1488/%2e%2e/%2e%2e/x",
        b"video=http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8%0d%0ax:%20y",
        b"video=http://s1.origin-cluster/video/1488/\xff.m3u8",
    ],
)
def test_a_query_close_to_a_remembered_one_is_decoded_and_checked_on_its_own(
    hostile: bytes,
) -> None:
    front = front_of(serving()[0])
    query = b"video=" + VIDEO.encode()
    valid = front.answer("GET", query, "")
    for _ in range(2):
        refused = front.answer("GET", hostile, "")
        assert isinstance(refused, Refusal)
        assert refused.status == 400
    assert front.answer("GET", query, "") == valid


def edge(front: RedirectFront) -> tuple[EdgeProtocol, list[bytes]]:
    config = Config(front, http="httptools", lifespan="off", log_config=None)
    config.load()
    protocol = EdgeProtocol(
        config,
        ServerState(),
        {},
        asyncio.get_running_loop(),
        max_head_bytes=4096,
        read_timeout=10.0,
    )
    protocol.access_log = False
    written: list[bytes] = []

    class Transport(asyncio.Transport):
        def write(self, data: bytes) -> None:  # type: ignore[override]
            written.append(bytes(data))

        def close(self) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 5555) if name == "peername" else default

    protocol.connection_made(Transport())
    return protocol, written


async def test_an_unprintable_location_is_refused_each_time_it_is_answered() -> None:
    front = RedirectFront(lambda scope, receive, send: None)  # type: ignore[arg-type,return-value]
    bad = Redirect("cdn", "http://cdn/\r\nx: y", 301, "s1", 1)
    front.bind(lambda video, client: bad)  # type: ignore[arg-type]
    for _ in range(2):
        protocol, written = edge(front)
        protocol.data_received(b"GET /?video=x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert written[0].startswith(b"HTTP/1.1 500 ")
        assert b"x: y" not in written[0]
    assert bad.location not in protocol.worker.locations


async def test_the_edge_remembers_a_bounded_number_of_locations_and_answers_each_its_own() -> None:
    front = front_of(serving()[0])
    protocol, written = edge(front)
    for number in (*range(LOCATION_MEMO_SIZE + 100), 7):
        protocol.data_received(
            b"GET /?video=http://s1.origin-cluster/v/%d.ts HTTP/1.1\r\nHost: a\r\n\r\n" % number
        )
        assert b"\r\nlocation: http://cdn.example.com/s1/v/%d.ts\r\n" % number in written[-1]
    assert 0 < len(protocol.worker.locations) <= LOCATION_MEMO_SIZE
    if protocol.idle_timer is not None:
        protocol.idle_timer.cancel()
