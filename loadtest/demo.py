"""`make demo`: `make run` plus two stand-in CDN hosts (127.0.0.1:8081 and :8082), each a
process of its own (`python -m loadtest.fake_cdn`), so the README's examples have CDN hosts
that answer and a newcomer can stop one and watch it go down and come back.

The banner gives each host's pid and the shell lines that stop one and start it again. Ctrl-C
stops the balancer and the hosts this started; a host started again by hand belongs to the
shell that started it (a later `make demo` finds it answering and uses it).
"""

import argparse
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app.main.cli import main as app_main
from loadtest.fake_cdn import SERVER_NAME, pid_file
from loadtest.support import ROOT

PORTS = (8081, 8082)


@dataclass
class StandIn:
    port: int
    pid: int
    process: "subprocess.Popen[bytes] | None"  # None: found running, not ours to stop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def answering(port: int) -> bool:
    """A stand-in answers on `port` (not just anything that listens there)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            return bool(
                answer.status == 200 and answer.headers.get("Server", "").startswith(SERVER_NAME)
            )
    except (urllib.error.URLError, OSError):
        return False


def start_stand_in(port: int, data_dir: Path, log: Path, timeout: float = 10) -> StandIn:
    if answering(port):
        marker = pid_file(data_dir, port)
        pid = int(marker.read_text()) if marker.exists() else 0
        return StandIn(port, pid, None)
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtest.fake_cdn",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + timeout
    while not answering(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the stand-in CDN host on port {port} did not start; see {log}")
        time.sleep(0.05)
    return StandIn(port, process.pid, process)


def stop(stand_in: StandIn) -> None:
    if stand_in.process is not None and stand_in.process.poll() is None:
        stand_in.process.terminate()
        stand_in.process.wait(5)


def banner(stand_ins: list[StandIn], data_dir: Path) -> list[str]:
    """The banner's lines about the hosts: where, which pid, how to stop and start one."""
    python = shlex.quote(
        os.path.relpath(sys.executable)
        if Path(sys.executable).is_relative_to(Path.cwd())
        else sys.executable
    )
    last = stand_ins[-1].port
    data = "" if data_dir == Path(".data") else f" --data-dir {shlex.quote(str(data_dir))}"
    hosts = ", ".join(f"{one.url} (pid {one.pid})" for one in stand_ins)
    return [
        f"  CDN stand-ins  {hosts}",
        f"  stop one       kill $(cat {shlex.quote(str(pid_file(data_dir, last)))})",
        f"  start it again {python} -m loadtest.fake_cdn --port {last}{data} &",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.demo", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    parser.add_argument(
        "--cdn-ports",
        default=",".join(map(str, PORTS)),
        help="ports of the stand-in CDN hosts on 127.0.0.1 (default 8081,8082)",
    )
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = [int(port) for port in args.cdn_ports.split(",") if port.strip()]
    stand_ins: list[StandIn] = []
    try:
        for port in ports:
            # one at a time: those started before a failure are stopped below
            stand_ins.append(start_stand_in(port, data_dir, data_dir / f"cdn-{port}.log"))  # noqa: PERF401
        return app_main(["run", "--data-dir", str(data_dir)], notes=banner(stand_ins, data_dir))
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for stand_in in stand_ins:
            stop(stand_in)


if __name__ == "__main__":
    sys.exit(main())
