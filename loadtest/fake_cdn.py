"""Stand-in CDN edges on loopback ports.

`FakeCdn`, for tests: answers health checks (`200 OK`, or the bytes it is given), can be
stopped, started again on the same port, or made to hang (accept and never answer).

`python -m loadtest.fake_cdn --port 8082`, for people (`make demo` starts two): a process of
its own that answers health probes and serves a tiny HLS video (any `*.m3u8` is a playlist of
one 2 s segment, any `*.ts` that segment), so the README's examples have CDN hosts that
answer, and stopping one (`kill $(cat .data/cdn-8082.pid)`) shows a host going down. Its pid
is in `<data dir>/cdn-<port>.pid` while it runs.
"""

import argparse
import errno
import os
import signal
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from loadtest.support import free_port

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FakeCdn:
    def __init__(self, port: int | None = None, *, hang: bool = False, answer: bytes = _OK) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.base_url = f"http://{self.host}"
        self.hang = hang
        self.answer = answer
        self.hits = 0
        self._server: socketserver.ThreadingTCPServer | None = None
        self._released = threading.Event()

    def start(self) -> "FakeCdn":
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.rfile.readline()
                fake.hits += 1
                if fake.hang:
                    fake._released.wait()
                    return
                self.wfile.write(fake.answer)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._released.clear()
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket: new connections are refused from now on."""
        server, self._server = self._server, None
        if server is not None:
            self._released.set()
            server.shutdown()
            server.server_close()

    @property
    def running(self) -> bool:
        return self._server is not None

    def refuses(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return False
        except OSError:
            return True


SEGMENT = Path(__file__).with_name("stand_in_segment.ts")
SEGMENT_SECONDS = 2
PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:3\n"
    f"#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}\n#EXT-X-MEDIA-SEQUENCE:0\n"
    f"#EXTINF:{SEGMENT_SECONDS}.0,\nsegment-0.ts\n#EXT-X-ENDLIST\n"
).encode()
SERVER_NAME = "balancer-stand-in-cdn"


class StandInEdge(BaseHTTPRequestHandler):
    """GET/HEAD: `/` and `/health` are 200, `*.m3u8` a one-segment playlist, `*.ts` the
    segment, anything else 404."""

    server_version = SERVER_NAME
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        path = self.path.partition("?")[0]
        if path in ("/", "/health"):
            status, kind, body = 200, "text/plain", b"ok\n"
        elif path.endswith(".m3u8"):
            status, kind, body = 200, "application/vnd.apple.mpegurl", PLAYLIST
        elif path.endswith(".ts"):
            status, kind, body = 200, "video/mp2t", SEGMENT.read_bytes()
        else:
            status, kind, body = (
                404,
                "text/plain",
                b"not found: a stand-in serves *.m3u8 and *.ts\n",
            )
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        port = getattr(self.server, "server_port", "")
        self.send_header("X-Served-By", f"stand-in CDN 127.0.0.1:{port}")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the balancer's terminal is the one people read


def pid_file(data_dir: Path, port: int) -> Path:
    return data_dir / f"cdn-{port}.pid"


def serve_stand_in(port: int, data_dir: Path) -> int:
    """Serve on 127.0.0.1:`port` until SIGINT or SIGTERM; the exit status."""
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), StandInEdge)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(f"error: 127.0.0.1:{port} is in use; is a stand-in running there already?")
        return 1
    server.daemon_threads = True
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = pid_file(data_dir, port)
    marker.write_text(f"{os.getpid()}\n")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"stand-in CDN host on http://127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    try:
        server.serve_forever(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        marker.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fake_cdn", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="on 127.0.0.1")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".data"), help="where the pid file goes (.data)"
    )
    args = parser.parse_args(argv)
    return serve_stand_in(args.port, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
