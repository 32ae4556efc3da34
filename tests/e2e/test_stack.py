"""`make stack`: two instances behind a real nginx, as compose.yaml runs them."""

import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from loadtest import stack as stack_module
from loadtest.stack import (
    SCRAPE_CONFIG,
    Stack,
    find_nginx,
    prometheus_config,
    render_nginx_config,
)
from loadtest.support import free_port, redis_keys
from tests.support.app import ADMIN_TOKEN
from tests.support.redirects import redirect_hosts
from tests.support.servers import key_prefix, reset_config
from tests.support.tools import can_bind, require, require_tool

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
FORGED = "203.0.113.7"  # TEST-NET-3: an address no request here really comes from
OTHER_CLIENT = "127.0.0.2"  # loopback too on Linux, but not an address the app trusts


def start_stack(database_url: str, redis_url: str, sequence_key: str, workdir: Path) -> Stack:
    nginx = require_tool(
        "nginx", install="apt-get install nginx-light, or brew install nginx", locate=find_nginx
    )
    return Stack(
        nginx=nginx,
        database_url=database_url,
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        workdir=workdir,
        port=free_port(),
        settings={
            **redis_keys(sequence_key),
            # The access log is where the client address the app settled on shows.
            "BALANCER_ACCESS_LOG": "true",
            "BALANCER_LOG_FORMAT": "console",
            # nginx stops first: no load balancer to wait for when the module's stack stops
            "BALANCER_DRAIN_SECONDS": "0",
        },
    )


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with (
        key_prefix(redis_url) as sequence_key,
        start_stack(
            database_url, redis_url, sequence_key, tmp_path_factory.mktemp("stack")
        ) as running,
    ):
        reset_config(running.front_url)
        yield running


def worker_of(url: str) -> int:
    body = httpx.get(f"{url}/ready").json()
    worker: int = body["worker"]
    return worker


def versions(stack: Stack) -> list[int]:
    return [httpx.get(f"{url}/ready").json()["config_version"] for url in stack.instance_urls]


def patch(stack: Stack, **values: object) -> int:
    """Change the config through nginx and wait until both instances serve it."""
    response = httpx.patch(f"{stack.front_url}/config", json=values, headers=ADMIN)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    deadline = time.monotonic() + 2
    while versions(stack) != [version, version]:
        assert time.monotonic() < deadline, "an instance did not pick the change up"
        time.sleep(0.02)
    return version


def test_nginx_alternates_requests_between_the_two_instances(stack: Stack) -> None:
    instances = {worker_of(url) for url in stack.instance_urls}
    with httpx.Client(base_url=stack.front_url) as client:  # one kept-alive connection
        seen = Counter(client.get("/ready").json()["worker"] for _ in range(20))
    assert set(seen) == instances
    assert list(seen.values()) == [10, 10]


async def test_split_is_exact_across_both_instances_through_nginx(stack: Stack) -> None:
    cdn_host = f"cdn-{uuid.uuid4().hex[:8]}.example.com"
    patch(stack, cdn_host=cdn_host, cdn_weight=9, origin_weight=1)
    hosts = await redirect_hosts(stack.front_url, 2000, headers={})
    origin = hosts.count("s1.origin-cluster")
    assert hosts.count(cdn_host) + origin == 2000
    # Each instance may stand inside a block of the shared sequence: a few off at most.
    assert abs(origin - 200) <= 4


def test_patch_through_nginx_reaches_both_instances_within_a_second(stack: Stack) -> None:
    cdn_host = f"cdn-{uuid.uuid4().hex[:8]}.example.com"
    response = httpx.patch(f"{stack.front_url}/config", json={"cdn_host": cdn_host}, headers=ADMIN)
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    started = time.monotonic()
    while versions(stack) != [version, version] and time.monotonic() - started < 1.0:
        time.sleep(0.01)
    assert versions(stack) == [version, version]
    assert time.monotonic() - started < 1.0
    location = httpx.get(f"{stack.front_url}/", params={"video": VIDEO}).headers["location"]
    assert urlsplit(location).netloc in (cdn_host, "s1.origin-cluster")


def test_metrics_are_served_to_the_scraper_but_not_through_nginx(stack: Stack) -> None:
    assert httpx.get(f"{stack.front_url}/metrics").status_code == 404
    direct = httpx.get(f"{stack.instance_urls[0]}/metrics")
    assert direct.status_code == 200
    assert "balancer_redirects_total" in direct.text


def test_nginx_answers_with_a_request_id_of_its_own(stack: Stack) -> None:
    first = httpx.get(f"{stack.front_url}/health").headers["x-request-id"]
    second = httpx.get(f"{stack.front_url}/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def client_seen_by_the_app(stack: Stack, url: str, source: str, forwarded_for: str) -> str:
    """Ask `url` from `source` with a forged X-Forwarded-For; return the client address the
    app wrote in its access log for that request."""
    probe = uuid.uuid4().hex
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport) as client:
        response = client.get(
            f"{url}/health", params={"probe": probe}, headers={"X-Forwarded-For": forwarded_for}
        )
    assert response.status_code == 200
    line = re.compile(rf'(\S+):\d+ - "GET /health\?probe={probe} ')
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        for log in stack.instance_logs:
            found = line.search(log.read_text(errors="replace"))
            if found:
                return found.group(1)
        time.sleep(0.02)
    raise AssertionError(f"no access log line for probe {probe}")


def test_app_sees_the_client_nginx_forwards_and_not_a_forged_one(stack: Stack) -> None:
    require(can_bind(OTHER_CLIENT), f"the local address {OTHER_CLIENT}", "a Linux loopback")
    # The app's peer is nginx on 127.0.0.1: it can only know OTHER_CLIENT from nginx's header.
    seen = client_seen_by_the_app(stack, stack.front_url, OTHER_CLIENT, forwarded_for=FORGED)
    assert seen == OTHER_CLIENT


def test_app_ignores_x_forwarded_for_when_the_peer_is_not_allowed(stack: Stack) -> None:
    require(can_bind(OTHER_CLIENT), f"the local address {OTHER_CLIENT}", "a Linux loopback")
    url = stack.instance_urls[0]
    assert client_seen_by_the_app(stack, url, OTHER_CLIENT, forwarded_for=FORGED) == OTHER_CLIENT


def test_app_trusts_x_forwarded_for_when_the_peer_is_allowed(stack: Stack) -> None:
    url = stack.instance_urls[0]
    assert client_seen_by_the_app(stack, url, "127.0.0.1", forwarded_for=FORGED) == FORGED


def test_requests_keep_succeeding_when_an_instance_dies(
    database_url: str, redis_url: str, sequence_key: str, tmp_path: Path
) -> None:
    with start_stack(database_url, redis_url, sequence_key, tmp_path) as running:
        survivor = worker_of(running.instance_urls[0])
        os.kill(running.pids()["instance 2"], signal.SIGKILL)
        with httpx.Client(base_url=running.front_url) as client:
            statuses = Counter(
                client.get("/", params={"video": VIDEO}).status_code for _ in range(200)
            )
            workers = {client.get("/ready").json()["worker"] for _ in range(10)}
        assert statuses == {301: 200}
        assert workers == {survivor}
        assert "connect() failed" in (running.nginx_dir / "error.log").read_text()


def test_stack_nginx_writes_only_under_its_own_folder(tmp_path: Path) -> None:
    config = render_nginx_config(tmp_path, "127.0.0.1:8000", ["127.0.0.1:1", "127.0.0.1:2"])
    paths = re.findall(r'^\s*(\w+_temp_path|error_log|access_log) "([^"]+)"', config, re.MULTILINE)
    assert {name for name, _ in paths} == {
        "client_body_temp_path",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
        "error_log",
        "access_log",
    }
    assert all(Path(path).is_relative_to(tmp_path) for _, path in paths)
    assert "server 127.0.0.1:1 max_fails=3 fail_timeout=10s;" in config
    assert "server 127.0.0.1:2 max_fails=3 fail_timeout=10s;" in config


def test_stack_explains_how_to_install_nginx_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stack_module, "find_nginx", lambda: None)
    assert stack_module.main(["--port", str(free_port())]) != 0
    message = capsys.readouterr().err
    assert "apt-get install nginx-light" in message
    assert "brew install nginx" in message


def test_stack_prometheus_config_is_the_repositorys_with_the_instances_as_targets(
    tmp_path: Path,
) -> None:
    repository = yaml.safe_load(SCRAPE_CONFIG.read_text())
    token = tmp_path / "metrics-token"
    config = yaml.safe_load(prometheus_config(["127.0.0.1:1", "127.0.0.1:2"], 15, token))
    (job,) = config["scrape_configs"]
    (original,) = repository["scrape_configs"]
    expected = {
        **original,
        "static_configs": [{"targets": ["127.0.0.1:1", "127.0.0.1:2"]}],
        "authorization": {**original["authorization"], "credentials_file": str(token)},
    }
    del expected["dns_sd_configs"]  # only Docker's DNS knows `app`
    assert job == expected
    assert config["global"]["scrape_interval"] == "15000ms"


def test_stack_says_how_to_get_prometheus_when_it_is_not_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stack = Stack(
        nginx="nginx",
        database_url="postgresql://unused",
        redis_url="redis://unused",
        admin_token=ADMIN_TOKEN,
        workdir=tmp_path,
    )
    monkeypatch.setattr(stack, "pids", lambda: {"instance 1": 1, "instance 2": 2})
    stack_module._announce(stack, ADMIN_TOKEN, "export TOKEN=$(cat .data/stack/admin-token)")
    out = capsys.readouterr().out
    assert "apt-get install prometheus" in out
    assert "In a shell: export TOKEN=$(cat .data/stack/admin-token)" in out
    assert 'Authorization: Bearer $TOKEN"' in out  # the example uses the variable it sets
