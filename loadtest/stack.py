"""`make stack`: the compose topology without Docker.

PostgreSQL and Redis (BALANCER_DATABASE_URL / BALANCER_REDIS_URL, or embedded servers under
the data folder), the migrations, two `python -m app serve` instances of one worker each on
their own ports, a local nginx in front of them on 127.0.0.1:8000 (BALANCER_PORT or
--port), rendered from deploy/nginx/stack.conf.template, and, where `prometheus` is
installed, Prometheus on 127.0.0.1:9090 scraping each instance with the repository's scrape
config (deploy/prometheus/prometheus.yml). Ctrl-C stops everything.
"""

import argparse
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from string import Template
from types import FrameType, TracebackType

import yaml

from app.infrastructure.postgres.migrations import migrate
from app.main.embedded import EmbeddedServices
from loadtest.support import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX_DIR = ROOT / "deploy" / "nginx"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE_BEARER_FILE = "/run/secrets/metrics-token"  # where compose mounts BALANCER_METRICS_TOKEN
ENV_PREFIX = "BALANCER_"
# Debian keeps nginx in /usr/sbin, which a normal user's PATH often leaves out.
NGINX_SEARCH = ("/usr/sbin", "/usr/local/sbin")
NGINX_MISSING = """\
nginx is not installed, and `make stack` runs it in front of the two instances.
Install it, then run `make stack` again:
  Debian/Ubuntu: sudo apt-get install nginx-light   (or the package nginx)
  macOS:         brew install nginx
(`make run` serves a single instance without nginx.)"""


PROMETHEUS_MISSING = (
    "not started (not installed, or --no-prometheus); "
    "apt-get install prometheus to have it scrape the instances"
)


class StackError(RuntimeError):
    """A part of the stack did not start or stopped on its own."""


class _NginxTemplate(Template):
    # nginx variables are `$name`: placeholders are `@{name}` instead.
    delimiter = "@"


def find_nginx() -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), *NGINX_SEARCH])
    return shutil.which("nginx", path=search)


def nginx_version(nginx: str) -> tuple[int, ...]:
    banner = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", banner)
    if found is None:
        raise StackError(f"{nginx} -v said {banner!r}, not a version")
    return tuple(int(part) for part in found.groups())


def nginx_command(nginx: str, prefix: Path, config: Path) -> list[str]:
    """nginx with its prefix and config; its own start-up errors go under the prefix too
    where it can say so (`-e`, nginx 1.19.5+), not to a root-owned /var/log/nginx."""
    command = [nginx, "-p", str(prefix), "-c", str(config)]
    if nginx_version(nginx) >= (1, 19, 5):
        command += ["-e", str(prefix / "error.log")]
    return command


def render_nginx_config(prefix: Path, listen: str, upstreams: list[str]) -> str:
    """nginx.conf for the stack: round robin over `upstreams`, every path under `prefix`."""
    template = _NginxTemplate((NGINX_DIR / "stack.conf.template").read_text())
    servers = "\n".join(
        f"        server {address} max_fails=3 fail_timeout=10s;" for address in upstreams
    )
    return template.substitute(
        prefix=prefix,
        listen=listen,
        servers=servers,
        proxy_conf=NGINX_DIR / "proxy.conf",
    )


def prometheus_config(targets: list[str], interval: float, token_file: Path) -> str:
    """deploy/prometheus/prometheus.yml for instances at `targets` ("host:port"), scraped
    every `interval` seconds. Only what Docker provides is replaced: the DNS discovery of the
    compose service `app` becomes the static targets, and the metrics-token secret compose
    mounts becomes `token_file`. Everything else (job, path, authorization) is kept."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    every = f"{round(interval * 1000)}ms"
    config["global"].update(
        scrape_interval=every,
        evaluation_interval=every,
        scrape_timeout=f"{round(min(interval, 5) * 1000)}ms",
    )
    (job,) = config["scrape_configs"]
    discovery = job.pop("dns_sd_configs")
    if [entry["names"] for entry in discovery] != [["app"]]:
        raise StackError(f"{SCRAPE_CONFIG}: expected DNS discovery of `app`, got {discovery}")
    job["static_configs"] = [{"targets": targets}]
    if job["authorization"]["credentials_file"] != COMPOSE_BEARER_FILE:
        raise StackError(
            f"{SCRAPE_CONFIG}: the bearer token is not read from {COMPOSE_BEARER_FILE}"
        )
    job["authorization"]["credentials_file"] = str(token_file)
    return str(yaml.safe_dump(config, sort_keys=False))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - http:// of ours
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class _Child:
    """A child process in a session of its own: Ctrl-C reaches only the stack, which then
    stops its children in order (nginx first, so no request meets a stopped instance)."""

    def __init__(self, name: str, command: list[str], log: Path, environ: Mapping[str, str]):
        self.name = name
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(environ),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None

    def failure(self) -> StackError:
        return StackError(
            f"{self.name} exited with {self.process.returncode}; the end of {self.log}:\n"
            f"{_tail(self.log)}"
        )

    def stop(self, timeout: float = 15) -> None:
        self.terminate()
        self.wait(timeout)

    def terminate(self) -> None:
        if not self.exited():
            self.process.terminate()

    def wait(self, timeout: float = 15) -> None:
        """Wait for the process to end, killed after `timeout` seconds."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Stack:
    """Instances of `python -m app serve` behind one nginx, as compose.yaml runs them.

    Every instance shares the database, Redis, admin token and `settings` (other
    `BALANCER_*` variables, such as the sequence key); each has one worker and a port of
    its own. nginx listens on `host:port` and writes everything under `workdir/nginx`.
    """

    def __init__(
        self,
        *,
        nginx: str,
        database_url: str,
        redis_url: str,
        admin_token: str,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int = 8000,
        instances: int = 2,
        settings: Mapping[str, str] | None = None,
        prometheus: str | None = None,
        prometheus_port: int = 9090,
        scrape_interval: float = 15,
    ) -> None:
        self._nginx = nginx
        self._prometheus = prometheus
        self._scrape_interval = scrape_interval
        self._workdir = workdir.resolve()
        self._host = host
        self._port = port
        self._ports = [free_port() for _ in range(instances)]
        self._environ = {
            **{key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)},
            # nginx connects from loopback: only it may set the client address.
            f"{ENV_PREFIX}FORWARDED_ALLOW_IPS": "127.0.0.1",
            **(settings or {}),
            f"{ENV_PREFIX}DATABASE_URL": database_url,
            f"{ENV_PREFIX}REDIS_URL": redis_url,
            f"{ENV_PREFIX}ADMIN_TOKEN": admin_token,
            f"{ENV_PREFIX}HOST": "127.0.0.1",
            f"{ENV_PREFIX}WORKERS": "1",
        }
        self._children: list[_Child] = []
        self.front_url = f"http://{host}:{port}"
        self.instance_urls = [f"http://127.0.0.1:{port}" for port in self._ports]
        self.prometheus_url = f"http://{host}:{prometheus_port}" if prometheus is not None else None

    @property
    def nginx_dir(self) -> Path:
        return self._workdir / "nginx"

    @property
    def instance_logs(self) -> list[Path]:
        return [self._workdir / f"instance-{number}.log" for number in self._numbers()]

    def _numbers(self) -> range:
        return range(1, len(self._ports) + 1)

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            for number, port, log in zip(
                self._numbers(), self._ports, self.instance_logs, strict=True
            ):
                environ = {**self._environ, f"{ENV_PREFIX}PORT": str(port)}
                command = [sys.executable, "-m", "app", "serve"]
                self._children.append(_Child(f"instance {number}", command, log, environ))
            for child, url in zip(self._children, self.instance_urls, strict=True):
                self._wait(child, f"{url}/ready", deadline)
            nginx = self._start_nginx()
            self._wait(nginx, f"{self.front_url}/health", deadline)
            if self.prometheus_url is not None:
                prometheus = self._start_prometheus(self.prometheus_url)
                self._wait(prometheus, f"{self.prometheus_url}/-/ready", deadline)
        except BaseException:
            self.stop()
            raise

    def _start_nginx(self) -> _Child:
        prefix = self.nginx_dir
        (prefix / "temp").mkdir(parents=True, exist_ok=True)
        config = prefix / "nginx.conf"
        upstreams = [f"127.0.0.1:{port}" for port in self._ports]
        config.write_text(render_nginx_config(prefix, f"{self._host}:{self._port}", upstreams))
        base = nginx_command(self._nginx, prefix, config)
        check = subprocess.run([*base, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise StackError(f"nginx rejected {config}:\n{check.stderr}")
        command = [*base, "-g", f"daemon off; pid {prefix / 'nginx.pid'};"]
        child = _Child("nginx", command, prefix / "nginx.out", os.environ)
        self._children.append(child)
        return child

    def _start_prometheus(self, url: str) -> _Child:
        """Prometheus scraping each instance (never nginx), as compose's does each replica."""
        assert self._prometheus is not None
        folder = self._workdir / "prometheus"
        folder.mkdir(parents=True, exist_ok=True)
        token_file = folder / "metrics-token"
        token_file.write_text(self._environ.get(f"{ENV_PREFIX}METRICS_TOKEN", ""))
        token_file.chmod(0o600)
        config = folder / "prometheus.yml"
        targets = [f"127.0.0.1:{port}" for port in self._ports]
        config.write_text(prometheus_config(targets, self._scrape_interval, token_file))
        command = [
            self._prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ]
        child = _Child("prometheus", command, folder / "prometheus.log", os.environ)
        self._children.append(child)
        return child

    @staticmethod
    def _wait(child: _Child, url: str, deadline: float) -> None:
        while not _answers(url):
            if child.exited():
                raise child.failure()
            if time.monotonic() > deadline:
                raise StackError(f"{child.name} did not answer {url}; see {child.log}")
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        return {child.name: child.pid for child in self._children}

    def check(self) -> None:
        """Raise StackError if any part stopped on its own."""
        for child in self._children:
            if child.exited():
                raise child.failure()

    def stop(self) -> None:
        """nginx and Prometheus first, then every instance at once: each drains for
        BALANCER_DRAIN_SECONDS, side by side rather than one after the other."""
        instances = [child for child in self._children if child.name.startswith("instance")]
        for child in reversed(self._children):
            if child not in instances:
                child.stop()
        for child in instances:
            child.terminate()
        for child in instances:
            child.wait()
        self._children.clear()


def admin_token(data_dir: Path) -> tuple[str, str]:
    """BALANCER_ADMIN_TOKEN, else one generated once and kept in the data folder; and the
    shell line that puts it in $TOKEN, the variable the README's examples use."""
    token = os.environ.get(f"{ENV_PREFIX}ADMIN_TOKEN", "").strip()
    if token:
        return token, f"export TOKEN=${{{ENV_PREFIX}ADMIN_TOKEN%%,*}}"
    token_file = data_dir / "admin-token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
    return token_file.read_text().strip(), f"export TOKEN=$(cat {shlex.quote(str(token_file))})"


def _settings_from_environment() -> dict[str, str]:
    """BALANCER_* variables for the instances; the stack itself owns the port."""
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith(ENV_PREFIX) and key != f"{ENV_PREFIX}PORT"
    }


def _announce(stack: Stack, token: str, export: str) -> None:
    pids = stack.pids()
    print(f"\nBalancer (nginx, round robin over the instances): {stack.front_url}")
    for number, (url, log) in enumerate(
        zip(stack.instance_urls, stack.instance_logs, strict=True), 1
    ):
        print(f"  instance {number}: {url} (pid {pids[f'instance {number}']}, log {log})")
    print(f"  nginx logs: {stack.nginx_dir}")
    if stack.prometheus_url is not None:
        print(f"Prometheus (scraping each instance): {stack.prometheus_url}")
    else:
        print(f"Prometheus: {PROMETHEUS_MISSING}")
    print(f"Admin token: {token}")
    print(
        f"In a shell: {export}\n"
        f"Try:  curl -i '{stack.front_url}/?video=http://s1.origin-cluster/video/1488/x.m3u8'\n"
        f'      curl -X PATCH {stack.front_url}/config -H "Authorization: Bearer $TOKEN" '
        """-H 'Content-Type: application/json' -d '{"cdn_weight": 4, "origin_weight": 1}'\n"""
        f"Load: BALANCER_URL={stack.front_url} make loadtest\n"
        "Ctrl-C stops everything."
    )


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.stack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="nginx's address (127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(f"{ENV_PREFIX}PORT", "8000")),
        help="nginx's port (BALANCER_PORT, else 8000)",
    )
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument(
        "--prometheus-port", type=int, default=9090, help="Prometheus's port (9090)"
    )
    parser.add_argument(
        "--no-prometheus", action="store_true", help="do not start Prometheus even if installed"
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data" / "stack")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    nginx = find_nginx()
    if nginx is None:
        print(NGINX_MISSING, file=sys.stderr)
        return 1
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with ExitStack() as resources:
            database_url = os.environ.get(f"{ENV_PREFIX}DATABASE_URL", "")
            redis_url = os.environ.get(f"{ENV_PREFIX}REDIS_URL", "")
            if not (database_url and redis_url):
                services = resources.enter_context(EmbeddedServices(data_dir / "services"))
                database_url = database_url or services.database_url
                redis_url = redis_url or services.redis_url
                print(f"Embedded PostgreSQL and Redis under {data_dir / 'services'}")
            migrate(database_url)
            token, export = admin_token(data_dir)
            stack = Stack(
                nginx=nginx,
                database_url=database_url,
                redis_url=redis_url,
                admin_token=token,
                workdir=data_dir,
                host=args.host,
                port=args.port,
                instances=args.instances,
                settings=_settings_from_environment(),
                prometheus=None if args.no_prometheus else shutil.which("prometheus"),
                prometheus_port=args.prometheus_port,
            )
            resources.enter_context(stack)
            _announce(stack, token, export)
            while True:
                stack.check()
                time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopped.")
        return 130
    except (StackError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
