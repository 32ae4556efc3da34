import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from loadtest.support import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """`python -m app serve` in a child process, as it runs in production."""

    def __init__(self, environ: dict[str, str], *, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")},
            **environ,
            "BALANCER_HOST": "127.0.0.1",
            "BALANCER_PORT": str(self.port),
            "BALANCER_WORKERS": str(workers),
            "BALANCER_LOG_FORMAT": "console",
        }
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=ROOT, env=self._environ
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"server exited with {self._process.returncode}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
