import logging
from collections.abc import Iterator

import pytest
import structlog

from app.infrastructure.logging import configure_logging


@pytest.fixture
def console_logs() -> Iterator[None]:
    configure_logging(level="info", json=False)
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def fail_with_a_secret_in_scope() -> None:
    database_password = "LOCAL-VALUE-7f3a"
    raise ConnectionRefusedError(len(database_password))


@pytest.mark.usefixtures("console_logs")
def test_console_tracebacks_leave_local_variables_out(capsys: pytest.CaptureFixture[str]) -> None:
    # asyncpg and uvicorn log through the standard library with exc_info. A renderer that
    # prints every frame's locals spent 1-2 s of the event loop per PostgreSQL error (redirects
    # stalled meanwhile) and prints whatever the frames hold, passwords included.
    try:
        fail_with_a_secret_in_scope()
    except ConnectionRefusedError:
        logging.getLogger("asyncpg.pool").exception("connection lost")

    logged = capsys.readouterr().err
    assert "connection lost" in logged
    assert "ConnectionRefusedError" in logged
    assert "LOCAL-VALUE-7f3a" not in logged
