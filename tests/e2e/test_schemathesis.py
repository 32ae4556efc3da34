"""schemathesis against the service's own OpenAPI document, on a real server with the admin
token: every operation, valid and invalid input, no 5xx, nothing outside the document.

The document is built in process at import (schemathesis needs it to make one test per
operation; its lazy loader does not run on pytest 9), and checked to be the one the server
serves. The fuzzer writes whatever configuration the schema allows (foreign CDN hosts, 0:1
splits), so its server runs on a database and a sequence key of its own, dropped afterwards.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.openapi import from_dict

from app.config import Settings
from app.main import create_app
from loadtest.support import ServerProcess, scratch_database
from tests.conftest import ADMIN_TOKEN, Servers
from tests.e2e.servers import running_server

pytestmark = pytest.mark.e2e

# Every check on the answers; positive_data_acceptance is left out: a string the schema
# allows is not a video URL on our origins, and refusing it with 400 is right.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
)
CONFIG = {
    "headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    "generation": {"max-examples": 40},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "enabled": False,
        **{name: {"enabled": True} for name in CHECKS},
        # A request line over BALANCER_MAX_HEADER_BYTES is refused before it is parsed.
        "negative_data_rejection": {
            "enabled": True,
            "expected-statuses": ["400", "401", "403", "404", "405", "413", "415", "422", "431"],
        },
    },
}


@pytest.fixture(scope="module")
def fuzz_database(servers: Servers) -> Iterator[str]:
    with scratch_database(servers.database_url, "balancer_fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def fuzzed_server(fuzz_database: str, redis_url: str) -> Iterator[ServerProcess]:
    with running_server(fuzz_database, redis_url, workers=2, log_level="error") as server:
        yield server


def _document() -> dict[str, Any]:
    unused = Settings(
        database_url="postgresql://unused/x", redis_url="redis://unused", log_format="console"
    )
    document: dict[str, Any] = create_app(unused).app.openapi()  # type: ignore[attr-defined]
    return document


DOCUMENT = _document()
schema = from_dict(DOCUMENT, config=SchemathesisConfig.from_dict(CONFIG))


def test_server_serves_the_document_that_is_fuzzed(fuzzed_server: ServerProcess) -> None:
    assert httpx.get(f"{fuzzed_server.url}/openapi.json").json() == DOCUMENT


def without_probes(body: object) -> None:
    """A generated configuration may turn CDN health checks on for hosts the fuzzer made up;
    the prober would then connect to them. Tests send traffic to this machine only, so checks
    stay off (a wrong type there is left alone: it is refused before anything is probed)."""
    health = body.get("cdn_health") if isinstance(body, dict) else None
    if isinstance(health, dict) and health.get("enabled") is True:
        health["enabled"] = False


@schema.parametrize()
def test_every_answer_keeps_the_documented_contract(
    case: Case[Any], fuzzed_server: ServerProcess
) -> None:
    without_probes(case.body)
    case.call_and_validate(base_url=fuzzed_server.url)
