"""The app's own log pipeline, as JSON on stderr, for tests that check what was logged."""

import contextlib
import json
import logging
from collections.abc import Iterator

import structlog

from app.infrastructure.logging import configure_logging


@contextlib.contextmanager
def json_logs() -> Iterator[None]:
    """Log as production does (JSON lines on stderr: read them with capsys), then undo it."""
    configure_logging(level="info", json=True)
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def events(logged: str, name: str) -> list[dict[str, object]]:
    """The events called `name` among JSON log lines."""
    lines = (json.loads(line) for line in logged.splitlines() if line.startswith("{"))
    return [event for event in lines if event["event"] == name]
