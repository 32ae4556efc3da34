"""Real players for the content steering test: an HLS stream and a DASH stream made once by
ffmpeg, stand-in CDN servers that publish them and log which segments they served, and a
page server for hls.js or dash.js (from npm, tests/player/) and the origin's multivariant
playlist or MPD."""

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
DASH_JS = PLAYERS / "node_modules" / "dashjs" / "dist" / "modern" / "umd" / "dash.all.min.js"
SEGMENT_SECONDS = 1
# H.264 Constrained Baseline and AAC-LC: Debian's Chromium plays them through MSE
# (MediaSource.isTypeSupported says so; checked by the test before it starts).
CODECS = "avc1.42c01e,mp4a.40.2"


def player_js(kind: str) -> Path:
    """hls.js or dash.js as `npm ci` installed it (the Makefile's test prerequisite)."""
    path = HLS_JS if kind == "hls" else DASH_JS
    require(path.is_file(), path.name, "npm ci --prefix tests/player (make test does it)")
    return path


def _ffmpeg_source(seconds: int) -> list[str]:
    return [
        *("-hide_banner", "-loglevel", "error", "-y"),
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"),
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"),
        *("-t", str(seconds)),
        *("-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast"),
        *("-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0"),
        *("-c:a", "aac", "-b:a", "64k"),
    ]


def make_dash_stream(directory: Path, seconds: int = 40) -> Path:
    """`stream.mpd` (static, 1 s fMP4 segments by number template) in `directory`."""
    mpd = directory / "stream.mpd"
    if mpd.is_file():
        return mpd
    ffmpeg = require_tool("ffmpeg", install="apt-get install ffmpeg")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            ffmpeg,
            *_ffmpeg_source(seconds),
            *("-f", "dash", "-seg_duration", str(SEGMENT_SECONDS), "-use_template", "1"),
            *("-use_timeline", "0", "-adaptation_sets", "id=0,streams=v id=1,streams=a"),
            *("-init_seg_name", "init-$RepresentationID$.m4s"),
            *("-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s"),
            str(mpd),
        ],
        check=True,
        timeout=120,
    )
    return mpd


def steered_mpd(mpd: Path, element: str, cdns: dict[str, str]) -> bytes:
    """ffmpeg's MPD with a BaseURL per pathway (`serviceLocation`) and `element`, the
    `<ContentSteering>` of /steering/tag, as an origin would publish it."""
    text = mpd.read_text()
    start = text.index("<MPD")
    end = text.index(">", start) + 1
    bases = "".join(
        f'\n\t<BaseURL serviceLocation="{pathway}">{url}/</BaseURL>'
        for pathway, url in cdns.items()
    )
    return (text[:end] + bases + "\n\t" + element + text[end:]).encode()


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
            *_ffmpeg_source(seconds),
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
            kind = {".m3u8": "application/vnd.apple.mpegurl", ".mpd": "application/dash+xml"}
            self._send(body, kind.get(Path(path).suffix, "text/html"))
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
        """Media segments served after `after` (HLS .ts, DASH chunk-*.m4s; no init)."""
        return [path for at, path in list(self.log) if at > after and _is_media(path)]

    def _served(self, path: str) -> None:
        self.log.append((time.time(), path))


def _is_media(path: str) -> bool:
    return path.endswith(".ts") or path.startswith("/chunk-")


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


_PAGE_HEAD = """<!doctype html>
<meta charset="utf-8">
<title>steering</title>
<video id="video" muted playsinline></video>
<script src="/player.js"></script>
<script>
const log = (window.__player = { events: [], samples: [], supported: false });
const video = document.getElementById("video");
log.supported = MediaSource.isTypeSupported('video/mp4; codecs="avc1.42c01e,mp4a.40.2"');
const note = (kind, data) => log.events.push({ t: Date.now(), kind, ...data });
setInterval(() => log.samples.push([Date.now(), video.currentTime]), 50);
"""
HLS_PAGE = (
    _PAGE_HEAD
    + """const hls = new Hls({ maxBufferLength: 3, maxMaxBufferLength: 4, backBufferLength: 4 });
hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_, data) =>
  note("steering", { url: data.url, priority: data.steeringManifest["PATHWAY-PRIORITY"] }));
hls.on(Hls.Events.FRAG_LOADED, (_, data) =>
  note("fragment", { url: data.frag.url, sn: data.frag.sn }));
hls.on(Hls.Events.ERROR, (_, data) =>
  note("error", { fatal: data.fatal, details: data.details }));
hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
hls.loadSource("/master.m3u8");
hls.attachMedia(video);
</script>
"""
).encode()
DASH_PAGE = (
    _PAGE_HEAD
    + """const events = dashjs.MediaPlayer.events;
const player = dashjs.MediaPlayer().create();
player.updateSettings({ streaming: { buffer: {
  bufferTimeAtTopQuality: 3, bufferTimeAtTopQualityLongForm: 3, stableBufferTime: 3,
  bufferToKeep: 4 } } });
player.on(events.CONTENT_STEERING_REQUEST_COMPLETED, (event) =>
  note("steering", { url: event.url,
                     priority: event.currentSteeringResponseData.pathwayPriority }));
player.on(events.FRAGMENT_LOADING_COMPLETED, (event) =>
  note("fragment", { url: event.request.url }));
// dash.js reports a failed download as an ERROR and goes on (another BaseURL, a retry);
// playback itself failing is a PLAYBACK_ERROR or an error of the video element.
player.on(events.ERROR, (event) =>
  note("error", { fatal: false, details: `error ${event.error.code}` }));
player.on(events.PLAYBACK_ERROR, () => note("error", { fatal: true, details: "playbackError" }));
video.addEventListener("error", () => note("error", { fatal: true, details: "video error" }));
player.initialize(video, "/master.mpd", true);
</script>
"""
).encode()


def page_server(directory: Path, kind: str, document: bytes) -> FileServer:
    """The test's own page server: the page, the player and the origin's multivariant
    playlist (`kind` "hls") or MPD ("dash")."""
    shutil.copy(player_js(kind), directory / "player.js")
    page = HLS_PAGE if kind == "hls" else DASH_PAGE
    name = "/master.m3u8" if kind == "hls" else "/master.mpd"
    return FileServer(directory, {"/": page, name: document})
