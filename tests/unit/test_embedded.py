"""What the embedded PostgreSQL does to the machine is said, once, before it does it."""

import os
import pwd
import sys
from pathlib import Path

import pytest

from app.main import embedded


def no_such_user(name: str) -> pwd.struct_passwd:
    raise KeyError(name)


def test_notice_names_the_system_user_and_the_folders_when_root_has_no_pgserver_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", no_such_user)

    notice = embedded.system_user_notice(Path("/home/dev/balancer/.data/postgres"))

    assert notice is not None
    assert notice["user"] == "pgserver"
    assert "/home/dev/balancer/.data/postgres" in notice["folders"]
    assert "userdel pgserver" in notice["undo"]


def test_no_notice_once_the_user_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: pwd.getpwuid(0))

    assert embedded.system_user_notice(Path(".data/postgres")) is None


def test_no_notice_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(pwd, "getpwnam", no_such_user)

    assert embedded.system_user_notice(Path(".data/postgres")) is None


class FakeServer:
    def psql(self, statement: str) -> str:
        return "(1 row)"

    def get_uri(self, database: str) -> str:
        return f"postgresql://fake/{database}"


class FakePgserver:
    """pgserver.get_server, which creates the user where the notice said it would."""

    def __init__(self) -> None:
        self.started = 0

    def get_server(self, pgdata: Path, cleanup_mode: str) -> FakeServer:
        self.started += 1
        return FakeServer()


class _Recorder:
    def __init__(self, warnings: list[tuple[str, dict[str, str]]]) -> None:
        self.warnings = warnings

    def warning(self, event: str, **fields: str) -> None:
        self.warnings.append((event, fields))


def test_starting_the_embedded_postgres_as_root_without_its_user_logs_the_notice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakePgserver()
    monkeypatch.setitem(sys.modules, "pgserver", fake)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    services = embedded.EmbeddedServices(tmp_path)

    # The module's own logger, not structlog's capture_logs: in a test worker where the
    # logger was used and cached before (its own embedded PostgreSQL, started as root on a
    # fresh machine, warned), the capture saw nothing (CI on a fresh machine).
    warnings: list[tuple[str, dict[str, str]]] = []
    monkeypatch.setattr(embedded, "log", _Recorder(warnings))
    services._start_postgres()

    ((event, notice),) = warnings
    assert event == "embedded_postgres_creates_system_user"
    assert str(tmp_path / "postgres") in notice["folders"]
    assert fake.started == 1
