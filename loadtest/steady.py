"""Fixed-rate load with every answer kept, for the fault and soak tests.

loadgen.py sends as fast as the server answers and keeps tallies; on a machine shared with
other work its latencies measure the machine. This one sends at a fixed rate whatever the
server does, spread over keep-alive connections that each know the worker they reach (they
ask `/ready` first), and keeps every answer: when it was sent, how long it took, its status
and `Location`, and the worker. A test can then say what happened on each worker at any
moment of the run: while Redis was away, right after a config change, in the last 10 s.
"""

import asyncio
import contextlib
import gc
import json
import time
from typing import NamedTuple

_HEAD_END = b"\r\n\r\n"
# A socket error, an answer cut short or not HTTP, or no answer in time.
_FAILED = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
    TimeoutError,
)


class Answer(NamedTuple):  # a tuple of numbers and a str: the collector never walks it
    sent: float  # time.monotonic() when the request was written
    latency: float  # seconds until the whole answer was read (the timeout when there was none)
    status: int  # 0: no answer (refused, dropped, timed out, not HTTP)
    location: str
    worker: int  # the process id of the worker, as its `/ready` said; 0 if unknown


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(_HEAD_END)).decode("latin-1")
    status_line, *lines = head[: -len(_HEAD_END)].split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ", 2)[1]), headers, body


class _Connection:
    """One keep-alive connection and the worker at its other end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.worker = 0

    @classmethod
    async def open(cls, host: str, port: int, *, ask_worker: bool = True) -> "_Connection":
        reader, writer = await asyncio.open_connection(host, port)
        connection = cls(reader, writer)
        if not ask_worker:
            return connection
        try:
            status, _, body = await connection.request(
                f"GET /ready HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            )
            connection.worker = int(json.loads(body)["worker"])
        except BaseException:
            connection.close()
            raise
        if status != 200:
            connection.close()
            raise ValueError(f"/ready answered {status}")
        return connection

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(raw)
        return await _answer(self.reader)

    def close(self) -> None:
        self.writer.close()


async def pinned_connections(
    host: str, port: int, *, workers: int, per_worker: int, attempts: int = 50
) -> list[_Connection]:
    """`per_worker` connections to each of `workers` workers. Which worker accepts a new
    connection is up to the kernel (one idle worker may take them all), so connections are
    opened in bursts and those to a worker that has enough are closed again."""
    by_worker: dict[int, list[_Connection]] = {}
    for _ in range(attempts):
        burst = await asyncio.gather(
            *(_Connection.open(host, port) for _ in range(2 * workers * per_worker)),
            return_exceptions=True,
        )
        for connection in burst:
            if isinstance(connection, BaseException):
                continue
            kept = by_worker.setdefault(connection.worker, [])
            if len(kept) < per_worker:
                kept.append(connection)
            else:
                connection.close()
        full = [kept for kept in by_worker.values() if len(kept) == per_worker]
        if len(full) >= workers:
            return [connection for kept in full[:workers] for connection in kept]
        await asyncio.sleep(0.05)
    for kept in by_worker.values():
        for connection in kept:
            connection.close()
    found = {worker: len(kept) for worker, kept in by_worker.items()}
    raise RuntimeError(f"could not reach {workers} workers {per_worker} times each: {found}")


class SteadyLoad:
    """`rate` requests per second of `GET path`, spread evenly over `per_worker` connections
    to each of `workers` workers, until `stop()`. `workers=0`: a server without `/ready`
    (the bare reference), `per_worker` connections to it and no worker known.

    Each connection sends on a fixed schedule; a slot missed while waiting for a slow answer
    is skipped, never made up in a burst. A connection that fails is reopened at its next slot
    (to whichever worker takes it). `answers` grows as answers arrive.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        rate: float,
        workers: int,
        per_worker: int = 4,
        timeout: float = 2.0,
    ) -> None:
        self._host = host
        self._port = port
        self._request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        self._rate = rate
        self._workers = workers
        self._per_worker = per_worker
        self._timeout = timeout
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._collecting = True
        self.started = 0.0
        self.answers: list[Answer] = []

    @property
    def workers(self) -> set[int]:
        """The workers the load reached (those it was pinned to, and any reached after)."""
        return {answer.worker for answer in self.answers if answer.worker}

    async def start(self) -> None:
        if self._workers:
            connections = await pinned_connections(
                self._host, self._port, workers=self._workers, per_worker=self._per_worker
            )
        else:
            connections = await asyncio.gather(
                *(
                    _Connection.open(self._host, self._port, ask_worker=False)
                    for _ in range(self._per_worker)
                )
            )
        # A collection walks the whole heap of the process the load runs in (a pytest
        # session's is large) and would show up as server latency; none until stop().
        self._collecting = gc.isenabled()
        gc.disable()
        self.started = time.monotonic()
        interval = len(connections) / self._rate
        self._tasks = [
            asyncio.create_task(self._drive(connection, interval, interval * i / len(connections)))
            for i, connection in enumerate(connections)
        ]

    async def stop(self) -> list[Answer]:
        self._stopping = True
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._collecting:
            gc.enable()
        for task in self._tasks:
            task.result()  # a bug in the generator must not pass for a quiet run
        return self.answers

    async def __aenter__(self) -> "SteadyLoad":
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _drive(self, connection: _Connection | None, interval: float, offset: float) -> None:
        worker = connection.worker if connection is not None else 0
        next_at = self.started + offset
        try:
            while not self._stopping:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(self._timeout):
                        if connection is None:
                            connection = await _Connection.open(
                                self._host, self._port, ask_worker=self._workers > 0
                            )
                            worker = connection.worker
                            sent = time.monotonic()
                        status, headers, _ = await connection.request(self._request)
                except _FAILED:
                    status, headers = 0, {}
                    if connection is not None:
                        connection.close()
                        connection = None
                done = time.monotonic()
                self.answers.append(
                    Answer(sent, done - sent, status, headers.get("location", ""), worker)
                )
                next_at = max(next_at + interval, done)
        finally:
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.close()
