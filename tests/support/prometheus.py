"""A real Prometheus (the Debian package's binary) scraping servers started by a test, with the
repository's scrape config (loadtest.stack.prometheus_config: deploy/prometheus/prometheus.yml
with its Docker DNS discovery replaced by the test's addresses), and its HTTP API."""

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from loadtest.stack import prometheus_config
from loadtest.support import free_port


def duration(seconds: float) -> str:
    """`seconds` as a PromQL duration, to the millisecond Prometheus keeps."""
    return f"{round(seconds * 1000)}ms"


class PrometheusApi:
    """Prometheus's HTTP API at `url`, which scrapes `targets` every `interval` seconds."""

    def __init__(self, url: str, targets: list[str], interval: float) -> None:
        self.url = url
        self.targets = targets
        self.interval = interval

    def _get(self, path: str, params: dict[str, str]) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", (params, body)
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {labels}, "value": [time, "value"]}, ...]."""
        data = self._get("query", {"query": expr, "time": f"{at:.3f}"})
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query as Grafana sends for a graph: [{"metric", "values": [[t, v], ...]}]."""
        data = self._get(
            "query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"},
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def samples(self, expr: str, at: float, window: float) -> dict[str, list[float]]:
        """Sample timestamps of `expr`[window] at `at`, by instance."""
        data = self._get("query", {"query": f"{expr}[{duration(window)}]", "time": f"{at:.3f}"})
        return {
            series["metric"]["instance"]: [float(t) for t, _ in series["values"]]
            for series in data["result"]
        }

    def scraped_window(self, since: float) -> tuple[float, float]:
        """(end, length) of a window from the first scrape of the first target after `since`
        to its latest scrape: rate() over exactly that window at exactly that end
        extrapolates nothing for that target (the samples sit on the window's ends)."""
        now = time.time()
        stamps = self.samples("up", now, now - since + 1)[self.targets[0]]
        first = min(t for t in stamps if t > since)
        return stamps[-1], stamps[-1] - first

    def rate_bounds(self, at: float, window: float) -> tuple[float, float]:
        """What rate() over `(at - window, at]` gives per request a counter counted in that
        window, when the counter is flat near both ends: between 1/window (no extrapolation)
        and 1/(the shortest span a target was sampled over), since Prometheus extrapolates
        each series from its sampled span at most to the window's ends."""
        spans = [stamps[-1] - stamps[0] for stamps in self.samples("up", at, window).values()]
        assert len(spans) == len(self.targets), spans
        assert min(spans) > 0, spans
        return 1 / window, 1 / min(spans)

    def wait_for_scrapes(self, count: int = 2, timeout: float = 30) -> None:
        """Wait until every target has been scraped `count` more times, successfully."""
        start = time.time()
        deadline = time.monotonic() + timeout
        while True:
            now = time.time()
            seen = self.samples("up", now, now - start + 1)
            fresh = {
                instance: [t for t in stamps if t > start] for instance, stamps in seen.items()
            }
            if set(fresh) == set(self.targets) and all(len(s) >= count for s in fresh.values()):
                ups = self.query("up", now)
                assert {r["metric"]["instance"]: r["value"][1] for r in ups} == dict.fromkeys(
                    self.targets, "1"
                ), ups
                return
            assert time.monotonic() < deadline, f"targets not scraped: {fresh}"
            time.sleep(self.interval / 4)


class PrometheusServer(PrometheusApi):
    """`prometheus` on a free loopback port, its data and log under `workdir`."""

    def __init__(
        self, binary: str, workdir: Path, targets: list[str], interval: float, token: str
    ) -> None:
        super().__init__(f"http://127.0.0.1:{free_port()}", targets, interval)
        self.binary = binary
        self.token = token
        self.workdir = workdir
        self.log = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> "PrometheusServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        token_file = self.workdir / "metrics-token"
        token_file.write_text(self.token)
        config.write_text(prometheus_config(self.targets, self.interval, token_file))
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not become ready; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
