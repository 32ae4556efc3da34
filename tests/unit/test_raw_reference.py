"""The raw-protocol reference of `make bench` answers what the service answers, so the ratio
against it compares the same work."""

import re
from typing import Any

import pytest

from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig
from app.domain.split import Split
from loadtest.bench.load import video_paths
from loadtest.bench.variants import forwarded_for
from loadtest.raw_reference import RawRedirect, Redirects
from tests.support.fakes import CountingSequence, version

LOCATION = re.compile(rb"\r\nlocation: ([^\r]*)\r\n")


class Transport:
    def __init__(self, peer: str = "127.0.0.1") -> None:
        self.peer = peer
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 5555)}.get(name, default)


def connect(peer: str = "127.0.0.1") -> tuple[RawRedirect, Transport]:
    protocol = RawRedirect(Redirects(frozenset({"127.0.0.1"})))
    transport = Transport(peer)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def the_service() -> RedirectVideo:
    """The service's use case on its default split: cdn.example.com, every tenth to the origin."""
    snapshot = ConfigSnapshot()
    snapshot.offer(version(1, BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1))))
    return RedirectVideo(snapshot, CountingSequence())


def test_the_raw_reference_answers_the_location_the_service_answers_for_each_request() -> None:
    protocol, transport = connect()
    service = the_service()
    paths = video_paths()[:60]  # http and https, plain and signed; six origin answers

    expected = []
    for index, path in enumerate(paths):
        headers = "".join(f"{name}: {value}\r\n" for name, value in forwarded_for(index).items())
        protocol.data_received(f"GET {path} HTTP/1.1\r\nHost: a\r\n{headers}\r\n".encode())
        expected.append(service(path.removeprefix("/?video=")).location.encode())

    assert LOCATION.findall(transport.written) == expected
    assert transport.written.count(b"HTTP/1.1 301 Moved Permanently\r\n") == len(paths)
    assert not transport.closed


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", ["85.1.2.3"], "85.1.2.3"),
        # The rightmost address the trusted peers did not add, as uvicorn's rule picks it.
        ("127.0.0.1", ["6.6.6.6, 85.1.2.3, 127.0.0.1"], "85.1.2.3"),
        ("127.0.0.1", ["6.6.6.6", "85.1.2.3"], "85.1.2.3"),
        ("127.0.0.1", ["127.0.0.1, 127.0.0.1"], "127.0.0.1"),
        ("127.0.0.1", [], "127.0.0.1"),
        # An untrusted peer's header names nobody.
        ("10.9.9.9", ["85.1.2.3"], "10.9.9.9"),
    ],
)
def test_the_raw_reference_takes_the_client_as_uvicorns_proxy_headers_rule_does(
    peer: str, forwarded: list[str], client: str
) -> None:
    protocol, _ = connect(peer)
    headers = "".join(f"X-Forwarded-For: {value}\r\n" for value in forwarded)

    protocol.data_received(f"GET /?video=x HTTP/1.1\r\nHost: a\r\n{headers}\r\n".encode())

    assert protocol.client == client


def test_a_request_that_does_not_keep_the_connection_alive_is_answered_then_closed() -> None:
    protocol, transport = connect()

    protocol.data_received(b"GET /?video=http://s1.origin-cluster/v.m3u8 HTTP/1.0\r\n\r\n")

    assert transport.written.startswith(b"HTTP/1.1 301 ")
    assert transport.closed
