"""The OpenAPI examples a newcomer tries in /docs name CDN hosts that answer: `make demo`'s
stand-ins, not names that resolve nowhere (health checks would take them down at once)."""

import json
import re

from app.main.asgi import create_app
from app.main.settings import Settings
from loadtest.demo import PORTS


def test_every_cdn_host_in_the_examples_is_a_stand_in_of_make_demo() -> None:
    unused = Settings(
        database_url="postgresql://unused/x", redis_url="redis://unused", log_format="console"
    )
    document = create_app(unused).app.openapi()  # type: ignore[attr-defined]
    schemas = document["components"]["schemas"]
    examples = json.dumps(
        [schemas[name].get("examples") for name in ("ConfigPatch", "ServerRulePut")]
    )
    hosts = set(re.findall(r'"host": "([^"]+)"', examples))
    assert hosts, "the examples show a pool"
    assert hosts <= {f"127.0.0.1:{port}" for port in PORTS}
