"""`python -m app serve | run | migrate`: the balancer's command line."""

import argparse
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from app.infrastructure.logging import configure_logging
from app.infrastructure.metrics import clear_metrics_directory
from app.infrastructure.postgres.migrations import migrate
from app.main.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from app.presentation.edge.protocol import edge_protocol
from app.presentation.edge.server import BalancerServer, Supervisor

log = structlog.get_logger("app")


def serve(settings: Settings) -> int:
    """Serve until stopped; the exit status is non-zero when a worker failed to start."""
    if not settings.steering_secret:
        # One for every worker of this instance (they inherit the environment).
        os.environ[f"{ENV_PREFIX}STEERING_SECRET"] = secrets.token_urlsafe(32)
    variable = f"{ENV_PREFIX}METRICS_DIR"
    if settings.metrics_dir:
        chosen = Path(settings.metrics_dir)
        chosen.mkdir(parents=True, exist_ok=True)
        clear_metrics_directory(chosen)
        return _serve(settings)
    # The workers publish their figures in a directory of this instance's own, gone after.
    directory = tempfile.mkdtemp(prefix="balancer-metrics-")
    os.environ[variable] = directory
    try:
        return _serve(settings)
    finally:
        os.environ.pop(variable, None)
        shutil.rmtree(directory, ignore_errors=True)


def _serve(settings: Settings) -> int:
    config = uvicorn.Config(
        "app.main.asgi:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=edge_protocol(
            max_head_bytes=settings.max_header_bytes,
            read_timeout=settings.read_timeout_seconds,
            fast_path=settings.fast_path,
        ),
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    if config.workers == 1:
        server = BalancerServer(config)
        server.run()  # exits with STARTUP_FAILURE when the app gave up starting
        return 0 if server.started else STARTUP_FAILURE
    # uvicorn.run() stops every worker when one fails to start and then returns as if all had
    # gone well: the status tells systemd, compose or Kubernetes that the start failed.
    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


def run_with_embedded_services(data_dir: Path, notes: Sequence[str] = ()) -> int:
    """Serve for people at a terminal: console logs, embedded servers when no database or
    Redis URL is set (their own logs go to files under `data_dir`), and a banner once the
    service answers, with `notes` (more lines of it) at its end."""
    from app.main.embedded import EmbeddedServices

    token_file = data_dir / "admin-token"
    generated = not os.environ.get(f"{ENV_PREFIX}ADMIN_TOKEN")
    if generated:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not token_file.exists():
            token_file.write_text(secrets.token_urlsafe(32))
            token_file.chmod(0o600)
        os.environ[f"{ENV_PREFIX}ADMIN_TOKEN"] = token_file.read_text().strip()
    # The operator's own token is not ours to show; the one generated here is. Either way
    # one line puts it in $TOKEN, the variable every example uses.
    access = (
        [
            f"  admin token    {os.environ[f'{ENV_PREFIX}ADMIN_TOKEN']}  (kept in {token_file})",
            f"  in a shell     export TOKEN=$(cat {shlex.quote(str(token_file))})",
        ]
        if generated
        else [
            f"  admin token    the one in {ENV_PREFIX}ADMIN_TOKEN",
            f"  in a shell     export TOKEN=${{{ENV_PREFIX}ADMIN_TOKEN%%,*}}",
        ]
    )

    needs_services = not (
        os.environ.get(f"{ENV_PREFIX}DATABASE_URL") and os.environ.get(f"{ENV_PREFIX}REDIS_URL")
    )
    if not needs_services:
        settings = load_settings()
        announce_when_ready(settings, [*access, *notes])
        return serve(settings)
    with EmbeddedServices(data_dir) as services:
        os.environ.setdefault(f"{ENV_PREFIX}DATABASE_URL", services.database_url)
        os.environ.setdefault(f"{ENV_PREFIX}REDIS_URL", services.redis_url)
        migrate(os.environ[f"{ENV_PREFIX}DATABASE_URL"])
        log.info("embedded_services_started", data_dir=str(data_dir), logs=services.log_files)
        settings = load_settings()
        announce_when_ready(settings, [*access, *notes])
        return serve(settings)


def announce_when_ready(settings: Settings, notes: Sequence[str]) -> None:
    """Log the banner once a worker answers `/ready` with 200 (from a daemon thread: the
    supervisor holds the main one)."""
    everywhere = settings.host in ("0.0.0.0", "::", "")  # noqa: S104
    host = "127.0.0.1" if everywhere else settings.host
    base = f"http://{host}:{settings.port}"
    listening = (
        f"every interface, port {settings.port}: reachable from this machine's network"
        if everywhere
        else f"{settings.host}:{settings.port} only ({ENV_PREFIX}HOST=0.0.0.0 opens it)"
    )

    def wait_and_announce() -> None:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        log.info(
            "\n".join(
                [
                    "The balancer is ready",
                    f"  redirect       {base}/?video={EXAMPLE_VIDEO}",
                    f"  API docs       {base}/docs",
                    f"  admin console  {base}/admin",
                    f"  metrics        {base}/metrics",
                    f"  listening on   {listening}",
                    *notes,
                    "  stop           Ctrl-C (workers finish their requests first)",
                ]
            )
        )

    threading.Thread(target=wait_and_announce, name="banner", daemon=True).start()


EXAMPLE_VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"


def _database_url() -> str:
    url = os.environ.get(f"{ENV_PREFIX}DATABASE_URL")
    if not url:
        raise SettingsError(f"{ENV_PREFIX}DATABASE_URL is required")
    return url


def main(argv: list[str] | None = None, *, notes: Sequence[str] = ()) -> int:
    """The command line; `notes` are more banner lines for `run` (`make demo`'s CDN hosts)."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve against BALANCER_DATABASE_URL and BALANCER_REDIS_URL")
    run = commands.add_parser("run", help="serve, starting embedded PostgreSQL/Redis if unset")
    run.add_argument("--data-dir", type=Path, default=Path(".data"))
    commands.add_parser("migrate", help="apply the migrations to BALANCER_DATABASE_URL")
    args = parser.parse_args(argv)

    if args.command == "run":
        os.environ.setdefault(f"{ENV_PREFIX}LOG_FORMAT", "console")
        # A developer's laptop: its admin API and console stay off the network unless asked
        # (the image and compose run `serve`, which listens on every interface).
        os.environ.setdefault(f"{ENV_PREFIX}HOST", "127.0.0.1")
    level = os.environ.get(f"{ENV_PREFIX}LOG_LEVEL", "info").lower()
    configure_logging(
        level=level if level in ("debug", "info", "warning", "error") else "info",
        json=os.environ.get(f"{ENV_PREFIX}LOG_FORMAT", "json") != "console",
    )
    try:
        if args.command == "serve":
            return serve(load_settings())
        if args.command == "run":
            return run_with_embedded_services(args.data_dir, notes)
        migrate(_database_url())
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
