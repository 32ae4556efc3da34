"""`python -m app serve | run | migrate`: the balancer's command line."""

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.config import ENV_PREFIX, Settings, SettingsError, load_settings
from app.infrastructure.logging import configure_logging
from app.infrastructure.metrics import clear_metrics_directory
from app.infrastructure.postgres.migrations import migrate
from app.presentation.http.protocol import bounded_httptools


def serve(settings: Settings) -> int:
    """Serve until stopped; the exit status is non-zero when a worker failed to start."""
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
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=bounded_httptools(
            max_head_bytes=settings.max_header_bytes, read_timeout=settings.read_timeout_seconds
        ),
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    if config.workers == 1:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    # uvicorn.run() stops every worker when one fails to start and then returns as if all had
    # gone well: the status tells systemd, compose or Kubernetes that the start failed.
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


def run_with_embedded_services(data_dir: Path) -> int:
    """Serve; with no database or Redis URL set, start embedded servers for them first."""
    from app.embedded import EmbeddedServices

    token_file = data_dir / "admin-token"
    if not os.environ.get(f"{ENV_PREFIX}ADMIN_TOKEN"):
        data_dir.mkdir(parents=True, exist_ok=True)
        if not token_file.exists():
            token_file.write_text(secrets.token_urlsafe(32))
            token_file.chmod(0o600)
        os.environ[f"{ENV_PREFIX}ADMIN_TOKEN"] = token_file.read_text().strip()
        print(f"Admin token (kept in {token_file}): {os.environ[f'{ENV_PREFIX}ADMIN_TOKEN']}")

    needs_services = not (
        os.environ.get(f"{ENV_PREFIX}DATABASE_URL") and os.environ.get(f"{ENV_PREFIX}REDIS_URL")
    )
    if not needs_services:
        return serve(load_settings())
    with EmbeddedServices(data_dir) as services:
        os.environ.setdefault(f"{ENV_PREFIX}DATABASE_URL", services.database_url)
        os.environ.setdefault(f"{ENV_PREFIX}REDIS_URL", services.redis_url)
        migrate(os.environ[f"{ENV_PREFIX}DATABASE_URL"])
        print(f"Embedded PostgreSQL and Redis under {data_dir}")
        return serve(load_settings())


def _database_url() -> str:
    url = os.environ.get(f"{ENV_PREFIX}DATABASE_URL")
    if not url:
        raise SettingsError(f"{ENV_PREFIX}DATABASE_URL is required")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve against BALANCER_DATABASE_URL and BALANCER_REDIS_URL")
    run = commands.add_parser("run", help="serve, starting embedded PostgreSQL/Redis if unset")
    run.add_argument("--data-dir", type=Path, default=Path(".data"))
    commands.add_parser("migrate", help="apply the migrations to BALANCER_DATABASE_URL")
    args = parser.parse_args(argv)

    configure_logging(level="info", json=False)
    try:
        if args.command == "serve":
            return serve(load_settings())
        if args.command == "run":
            return run_with_embedded_services(args.data_dir)
        migrate(_database_url())
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
