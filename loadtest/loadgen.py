"""Fallback HTTP/1.1 load generator for `make bench` on machines without wrk.

`python -m loadtest.loadgen --port 8000 --paths paths.txt --connections 64 --duration 5`
keeps N keep-alive connections busy, one request in flight on each (as wrk does), cycling
through the request paths, and prints one JSON object: requests completed inside the
window, latency percentiles, non-3xx answers and socket errors.

It is plain Python on one core, so it tops out well below what wrk drives: figures it
produces measure the generator as much as the server and are labelled that way.
"""

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = b"\r\ncontent-length:"


@dataclass
class Tally:
    """What every connection reports into; the measuring window is [started, deadline)."""

    requests: list[bytes]
    started: int = 0
    deadline: int = 0
    stopping: bool = False
    next_index: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: int = 0

    def next_request(self) -> bytes:
        self.next_index = (self.next_index + 1) % len(self.requests)
        return self.requests[self.next_index]

    def record(self, status: int, sent_ns: int, done_ns: int) -> None:
        if done_ns < self.deadline:
            self.latencies_ns.append(done_ns - sent_ns)
            self.statuses[status] += 1


class Connection(asyncio.Protocol):
    """One keep-alive connection: parse each response, then send the next request."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally
        self._buffer = bytearray()
        self._sent_ns = 0
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._tally.stopping:
            self._tally.socket_errors += 1
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (response := self._take_response()) is not None:
            now = time.perf_counter_ns()
            self._tally.record(response, self._sent_ns, now)
            if now >= self._tally.deadline:
                self._tally.stopping = True
            self._send()

    def _take_response(self) -> int | None:
        """The status of the first complete response in the buffer, removing it; else None."""
        end = self._buffer.find(_HEAD_END)
        if end == -1:
            return None
        head = bytes(self._buffer[:end]).lower()
        length = 0
        start = head.find(_CONTENT_LENGTH)
        if start != -1:
            line_end = head.find(b"\r\n", start + 2)
            length = int(head[start + len(_CONTENT_LENGTH) : line_end if line_end != -1 else None])
        total = end + len(_HEAD_END) + length
        if len(self._buffer) < total:
            return None
        del self._buffer[:total]
        return int(head[9:12])

    def _send(self) -> None:
        assert self._transport is not None
        if self._tally.stopping:
            self._transport.close()
            return
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(self._tally.next_request())


def _request(line: str, host_header: str) -> bytes:
    """`path` then tab-separated `Name: value` headers, as loadtest/bench/load.py writes."""
    path, *headers = line.split("\t")
    head = "".join(f"{header}\r\n" for header in headers)
    return f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n{head}\r\n".encode()


async def generate(
    host: str, port: int, paths: list[str], connections: int, duration: float
) -> Tally:
    loop = asyncio.get_running_loop()
    host_header = f"{host}:{port}"
    tally = Tally([_request(line, host_header) for line in paths])
    tally.started = time.perf_counter_ns()
    tally.deadline = tally.started + int(duration * 1e9)
    opened = await asyncio.gather(
        *(
            loop.create_connection(lambda: Connection(tally), host, port)
            for _ in range(connections)
        ),
        return_exceptions=True,
    )
    tally.socket_errors += sum(isinstance(result, BaseException) for result in opened)
    await asyncio.sleep(max(0.0, (tally.deadline - time.perf_counter_ns()) / 1e9))
    tally.stopping = True
    closing = [result[1].closed for result in opened if not isinstance(result, BaseException)]
    if closing:
        # A connection whose answer never comes must not hold the report back.
        await asyncio.wait(closing, timeout=2)
    return tally


def percentile(sorted_values: list[int], share: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def report(tally: Tally) -> dict[str, object]:
    latencies = sorted(tally.latencies_ns)
    duration_s = (tally.deadline - tally.started) / 1e9
    return {
        "requests": len(latencies),
        "duration_s": duration_s,
        "p50_us": percentile(latencies, 0.50) / 1000,
        "p99_us": percentile(latencies, 0.99) / 1000,
        "non_3xx": sum(
            count for status, count in tally.statuses.items() if not 300 <= status < 400
        ),
        "statuses": {str(status): count for status, count in sorted(tally.statuses.items())},
        "socket_errors": tally.socket_errors,
    }


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional: the generator runs without it, only slower
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.loadgen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", type=Path, required=True, help="request paths, one a line")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    args = parser.parse_args(argv)
    paths = [line for line in args.paths.read_text().splitlines() if line]
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        tally = runner.run(generate(args.host, args.port, paths, args.connections, args.duration))
    print(json.dumps(report(tally)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
