"""Servers under test: the service in each measured variant, and the two references (the bare
ASGI redirect under uvicorn, and the raw asyncio Protocol with no ASGI and no uvicorn), each
fed the same requests as the variants it is held against."""

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.bench import BenchError
from loadtest.bench.procs import command_line, pinned, process_tree
from loadtest.support import free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# Both servers trust forwarded headers from the same peers, as the service does by default.
FORWARDED_ALLOW_IPS = "127.0.0.1"

REFERENCE = "reference"
RAW_REFERENCE = "raw"


def reference_name(kind: str, mix: str = "") -> str:
    """The target name of reference `kind` fed request mix `mix` ("" = plain requests)."""
    return f"{kind}-{mix}" if mix else kind


@dataclass(frozen=True)
class Variant:
    """One way of running the service that `make bench` measures against the reference.

    `environ` adds `BALANCER_*` settings. `config` builds a `PATCH /config` body applied
    before the load, starting on the exit stack whatever it needs (CDN hosts to probe); such
    a variant gets a database of its own, so its config does not leak into the others.
    `mix` names the request mix it is fed ("" = plain rotating URLs; the others add headers,
    see `variants.MIXES`); it is held against both references fed the same mix.
    """

    name: str
    label: str
    environ: Mapping[str, str] = field(default_factory=dict)
    config: Callable[[ExitStack], Mapping[str, Any]] | None = None
    mix: str = ""
    workers: int = 1
    pinned: bool = True
    # (other variant, share): this variant must reach `share` of the other's requests/s.
    at_least_of: tuple[str, float] | None = None
    # Goals reported beside the ratios, never failing a run: the least share of the raw
    # reference's and of the bare ASGI reference's requests/s (fed the same requests).
    goal_of_raw: float | None = None
    goal_of_asgi: float | None = None

    @property
    def reference(self) -> str:
        """The bare ASGI reference fed the same requests (it must reach 90% of it)."""
        return reference_name(REFERENCE, self.mix)

    @property
    def raw_reference(self) -> str:
        """The raw-protocol reference fed the same requests."""
        return reference_name(RAW_REFERENCE, self.mix)


def _http_get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _service_ready(status: int, body: bytes) -> bool:
    return status == 200 and json.loads(body).get("status") == "ok"


def _reference_ready(status: int, _: bytes) -> bool:
    return 300 <= status < 400


@dataclass
class Server:
    """One server under test, started in a process group of its own so that it and its
    workers stop together whatever happens to the harness."""

    name: str
    label: str
    workers: int
    core: int | None
    command: list[str]
    environ: dict[str, str]
    port: int
    ready_path: str
    is_ready: Callable[[int, bytes], bool]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                pinned(self.command, self.core),
                cwd=ROOT,
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BenchError(f"{self.name} exited during start-up\n{self.log_tail()}")
            try:
                if self.is_ready(*_http_get(self.port, self.ready_path)):
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not become ready in {timeout:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, signum: signal.Signals) -> None:
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """uvicorn serves in-process with one worker and from spawned children with more."""
        spawned = [pid for pid in process_tree(self.pid) if "spawn_main" in command_line(pid)]
        return spawned or [self.pid]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def service_server(
    variant: Variant, core: int | None, backing: Mapping[str, str], workdir: Path
) -> Server:
    port = free_port()
    core = core if variant.pinned else None
    where = f"core {core}" if core is not None else "unpinned"
    workers = f"{variant.workers} worker{'s' if variant.workers > 1 else ''}"
    environ = {
        **{key: value for key, value in os.environ.items() if not key.startswith("BALANCER_")},
        **backing,
        "BALANCER_HOST": HOST,
        "BALANCER_PORT": str(port),
        "BALANCER_WORKERS": str(variant.workers),
        "BALANCER_ACCESS_LOG": "false",
        "BALANCER_LOG_FORMAT": "console",
        "BALANCER_DRAIN_SECONDS": "0",  # no load balancer to wait for between rounds
        "BALANCER_FORWARDED_ALLOW_IPS": FORWARDED_ALLOW_IPS,
        "BALANCER_ADMIN_TOKEN": secrets.token_urlsafe(24),
        **variant.environ,
    }
    return Server(
        name=variant.name,
        label=f"{variant.label} ({workers}, {where})",
        workers=variant.workers,
        core=core,
        command=[sys.executable, "-m", "app", "serve"],
        environ=environ,
        port=port,
        ready_path="/ready",
        is_ready=_service_ready,
        log_path=workdir / f"{variant.name}.log",
    )


def configure(server: Server, config: Mapping[str, Any]) -> None:
    """Apply a variant's `PATCH /config` body and wait until the server serves it."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=5)
    try:
        connection.request(
            "PATCH",
            "/config",
            body=json.dumps({**config, "comment": "make bench variant"}),
            headers={
                "Authorization": f"Bearer {server.environ['BALANCER_ADMIN_TOKEN']}",
                "Content-Type": "application/json",
            },
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise BenchError(f"{server.name}: PATCH /config answered {response.status}: {body!r}")
    version = json.loads(body)["version"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, ready = _http_get(server.port, "/ready")
        if status == 200 and json.loads(ready).get("config_version") == version:
            time.sleep(1)  # /ready answered from one worker; every worker has it within 1 s
            return
        time.sleep(0.05)
    raise BenchError(f"{server.name}: config version {version} not served within 10 s")


def reference_server(core: int | None, workdir: Path, mix: str = "") -> Server:
    """The bare ASGI redirect under uvicorn, as the service runs it (uvloop, httptools,
    proxy headers from the same trusted peer); `mix` tells apart its copies fed different
    request mixes."""
    return _reference(
        REFERENCE,
        "bare ASGI",
        [
            *(sys.executable, "-m", "uvicorn", "loadtest.reference_app:app"),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
            *("--proxy-headers", "--forwarded-allow-ips", FORWARDED_ALLOW_IPS),
            "--no-server-header",
        ],
        core=core,
        workdir=workdir,
        mix=mix,
    )


def raw_reference_server(core: int | None, workdir: Path, mix: str = "") -> Server:
    """The raw asyncio Protocol on uvloop + httptools (loadtest/raw_reference.py)."""
    return _reference(
        RAW_REFERENCE,
        "asyncio Protocol + httptools, no ASGI",
        [
            *(sys.executable, "-m", "loadtest.raw_reference"),
            *("--forwarded-allow-ips", FORWARDED_ALLOW_IPS),
        ],
        core=core,
        workdir=workdir,
        mix=mix,
    )


def _reference(
    kind: str, what: str, command: list[str], *, core: int | None, workdir: Path, mix: str
) -> Server:
    port = free_port()
    name = reference_name(kind, mix)
    where = f"core {core}" if core is not None else "unpinned"
    return Server(
        name=name,
        label=f"{kind} ({what}, {where}{', ' + mix + ' requests' if mix else ''})",
        workers=1,
        core=core,
        command=[*command, "--host", HOST, "--port", str(port)],
        environ=dict(os.environ),
        port=port,
        ready_path="/?video=http://s1.origin-cluster/video/1/ready.m3u8",
        is_ready=_reference_ready,
        log_path=workdir / f"{name}.log",
    )
