"""A real player for the content steering test: an HLS stream made once by ffmpeg, stand-in
CDN servers that publish it and log which segments they served, and a page server for
hls.js (from npm, tests/player/) and the origin's multivariant playlist."""

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loadtest.support import free_port
from tests.support.tools import require, require_tool

PLAYERS = Path(__file__).parents[1] / "player"
HLS_JS = PLAYERS / "node_modules" / "hls.js" / "dist" / "hls.min.js"
SEGMENT_SECONDS = 1
# H.264 Constrained Baseline and AAC-LC: Debian's Chromium plays them through MSE
# (MediaSource.isTypeSupported says so; checked by the test before it starts).
CODECS = "avc1.42c01e,mp4a.40.2"


def hls_js() -> Path:
    """hls.js as `npm ci` installed it (the Makefile's test prerequisite)."""
    require(HLS_JS.is_file(), "hls.js", "npm ci --prefix tests/player (make test does it)")
    return HLS_JS


def make_hls_stream(directory: Path, seconds: int = 40) -> Path:
    """`media.m3u8` and its 1 s MPEG-TS segments in `directory`: a test picture and a tone,
    320x180, made by ffmpeg once (kept while the directory is)."""
    playlist = directory / "media.m3u8"
    if playlist.is_file():
        return playlist
    ffmpeg = require_tool("ffmpeg", install="apt-get install ffmpeg")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            ffmpeg,
            *("-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"),
            *("-t", str(seconds)),
            *("-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast"),
            *("-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0"),
            *("-c:a", "aac", "-b:a", "64k"),
            *("-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod"),
            *("-hls_segment_filename", str(directory / "seg%03d.ts")),
            str(playlist),
        ],
        check=True,
        timeout=120,
    )
    return playlist


class _Quiet(SimpleHTTPRequestHandler):
    """Files from a directory, readable from any origin, without a log line per request."""

    served: Callable[[str], None]
    healthy: Callable[[], bool]
    extra: dict[str, bytes]

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/health":
            if self.healthy():
                self._send(b"ok", "text/plain")
            else:
                self.send_error(503)
            return
        body = self.extra.get(path)
        if body is not None:
            kind = "application/vnd.apple.mpegurl" if path.endswith(".m3u8") else "text/html"
            self._send(body, kind)
            return
        super().do_GET()
        self.served(path)

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client gone mid-answer (a probe that timed out, a player that moved on)


class FileServer:
    """A directory over HTTP on a loopback port, plus `extra` documents by path; `log` holds
    (wall clock, path) of each file served. `stop()` closes the listener: new connections
    are refused, as from a CDN edge that went away. `healthy = False` fails its health
    checks only (503 on /health) while it goes on serving files: a CDN edge that reports
    itself unhealthy (or is drained) before it fails viewers."""

    def __init__(self, directory: Path, extra: dict[str, bytes] | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log: list[tuple[float, str]] = []
        self.extra = dict(extra or {})
        self.healthy = True
        self._server: _Server | None = None

    def start(self) -> "FileServer":
        handler = type(
            "Handler",
            (_Quiet,),
            {
                "served": staticmethod(self._served),
                "healthy": staticmethod(lambda: self.healthy),
                "extra": self.extra,
            },
        )
        server = _Server(("127.0.0.1", self.port), partial(handler, directory=str(self.directory)))
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def segments(self, after: float = 0.0) -> list[str]:
        return [path for at, path in list(self.log) if at > after and path.endswith(".ts")]

    def _served(self, path: str) -> None:
        self.log.append((time.time(), path))


def multivariant(tag: str, cdns: dict[str, str]) -> bytes:
    """The origin's multivariant playlist: the steering tag, then one variant per pathway
    (the same rendition on each CDN: pathway cloning by hand)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS", tag]
    for pathway, url in cdns.items():
        lines += [
            f'#EXT-X-STREAM-INF:BANDWIDTH=400000,CODECS="{CODECS}",RESOLUTION=320x180,'
            f'PATHWAY-ID="{pathway}"',
            f"{url}/media.m3u8",
        ]
    return ("\n".join(lines) + "\n").encode()


PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>steering</title>
<video id="video" muted playsinline></video>
<script src="/hls.min.js"></script>
<script>
const log = (window.__player = { events: [], samples: [], supported: false });
const video = document.getElementById("video");
log.supported = MediaSource.isTypeSupported('video/mp4; codecs="avc1.42c01e,mp4a.40.2"');
const hls = new Hls({ maxBufferLength: 3, maxMaxBufferLength: 4, backBufferLength: 4 });
const note = (kind, data) => log.events.push({ t: Date.now(), kind, ...data });
hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_, data) =>
  note("steering", { url: data.url, priority: data.steeringManifest["PATHWAY-PRIORITY"] }));
hls.on(Hls.Events.FRAG_LOADED, (_, data) =>
  note("fragment", { url: data.frag.url, sn: data.frag.sn }));
hls.on(Hls.Events.ERROR, (_, data) =>
  note("error", { fatal: data.fatal, details: data.details }));
hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
hls.loadSource("/master.m3u8");
hls.attachMedia(video);
setInterval(() => log.samples.push([Date.now(), video.currentTime]), 50);
</script>
"""


def page_server(directory: Path, master: bytes) -> FileServer:
    """The test's own page server: the page, hls.js and the multivariant playlist."""
    shutil.copy(hls_js(), directory / "hls.min.js")
    return FileServer(directory, {"/": PAGE, "/index.html": PAGE, "/master.m3u8": master})
