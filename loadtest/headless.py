"""`make loadtest-headless`: the fixed Locust scenario, with a balancer of its own if needed.

Against BALANCER_URL when it is set; LOADTEST_ADMIN_TOKEN, if set, lets the admin users in
(a token issued for load tests: BALANCER_ADMIN_TOKEN is never handed to Locust). Otherwise
it starts `python -m app serve` on a free port of 127.0.0.1 for the run, on the PostgreSQL
and Redis of BALANCER_DATABASE_URL and BALANCER_REDIS_URL or on embedded ones in a
temporary folder, migrated, with a fresh admin token the admin users get, and stops it
afterwards.

Results go to loadtest/results/locust-<UTC time>_{stats,stats_history,failures,exceptions}.csv
and loadtest/results/locust-<UTC time>.html. The exit code is Locust's: 0 only when every
response kept the rules and the CDN:origin split matched the configured weights.
"""

import argparse
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from app.infrastructure.postgres.migrations import migrate
from loadtest.support import ROOT, ServerProcess, backing_services, forget_keys, redis_keys

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
RESULTS = ROOT / "loadtest" / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.headless", description=__doc__)
    parser.add_argument("--users", type=int, default=50, help="concurrent users (default 50)")
    parser.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    parser.add_argument("--run-time", default="1m", help="how long, e.g. 30s, 2m (default 1m)")
    parser.add_argument(
        "--processes", type=int, default=1, help="Locust worker processes (default 1)"
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="workers of the balancer this starts itself (default 1; Locust needs a core too)",
    )
    parser.add_argument(
        "--spread-clients",
        action="store_true",
        help="each user an address of its own (X-Forwarded-For), for a balancer that trusts "
        "this machine as a proxy; its per-client rate limit then applies per user",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def locust_command(args: argparse.Namespace, host: str, prefix: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.run_time,
        "--host",
        host,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
    ]
    if args.processes > 1:
        command += ["--processes", str(args.processes)]
    if args.spread_clients:
        command.append("--spread-clients")
    return command


@contextmanager
def own_balancer(workers: int) -> Iterator[tuple[str, str]]:
    """A migrated balancer on 127.0.0.1 for one run: its URL and admin token."""
    with ExitStack() as stack:
        folder = stack.enter_context(TemporaryDirectory(prefix="balancer-loadtest-"))
        database_url, redis_url = stack.enter_context(backing_services(Path(folder)))
        migrate(database_url)
        token = secrets.token_urlsafe(32)
        sequence_key = f"balancer-loadtest:{secrets.token_hex(8)}"
        server = ServerProcess(
            {
                "BALANCER_DATABASE_URL": database_url,
                "BALANCER_REDIS_URL": redis_url,
                "BALANCER_ADMIN_TOKEN": token,
                # keys of its own: the split this run sees is not mixed with anyone else's
                **redis_keys(sequence_key),
                "BALANCER_LOG_LEVEL": "warning",
            },
            workers=workers,
        )
        server.start()
        try:
            print(f"Balancer started at {server.url} with {workers} worker(s)", flush=True)
            yield server.url, token
        finally:
            server.stop()
            forget_keys(redis_url, sequence_key)


def run_locust(args: argparse.Namespace, host: str, environ: Mapping[str, str]) -> int:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = args.results_dir / f"locust-{stamp}"
    print(
        f"Locust: {args.users} users, {args.spawn_rate}/s, {args.run_time} against {host}",
        flush=True,
    )
    code = subprocess.run(locust_command(args, host, prefix), env=environ, check=False).returncode
    print(f"Results: {prefix}_*.csv and {prefix}.html (exit code {code})")
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    target = os.environ.get("BALANCER_URL")
    # The service's own token stays out of the load generator's environment.
    environ = {k: v for k, v in os.environ.items() if k != "BALANCER_ADMIN_TOKEN"}
    try:
        if target:
            return run_locust(args, target, environ)
        with own_balancer(args.server_workers) as (url, token):
            return run_locust(args, url, {**environ, "LOADTEST_ADMIN_TOKEN": token})
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
