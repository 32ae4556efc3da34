"""compose.yaml and its nginx: the topology `make up` starts, read without a Docker engine.

The file is validated against the compose specification (compose-spec, the same rules
`docker compose config` applies) everywhere; `docker compose config` itself runs only where
the compose plugin is installed, which CI cannot have (tests/support/tools.py: CI_EXEMPT).
"""

import dataclasses
import ipaddress
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyOptions

from app.main.settings import Settings, load_settings
from loadtest.stack import find_nginx, nginx_command, nginx_version
from tests.support.tools import require, require_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
NGINX_DIR = ROOT / "deploy" / "nginx"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
METRICS_SECRET = "/run/secrets/metrics-token"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "BALANCER_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def example_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def filled_env() -> dict[str, str]:
    """.env as a user makes it from the example: every secret generated."""
    return {**example_env(), **{name: secrets.token_urlsafe(32) for name in SECRETS}}


def interpolate(value: str, env: dict[str, str]) -> str:
    """What compose makes of a value, given the variables of `env` (the .env file)."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        present = env.get(name)
        if operator in (":-", "-"):
            return present if present or (operator == "-" and present is not None) else argument
        if operator in (":?", "?") and not present:
            raise AssertionError(f"compose would stop: {argument}")
        return present or ""

    return VARIABLE.sub(substitute, value).replace("$$", "$")


def nginx_directives(path: Path) -> list[str]:
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
    return [" ".join(statement.split()) for statement in re.split(r"[;{}]", text)]


def block(path: Path, opening: str) -> list[str]:
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
    found = re.search(rf"{re.escape(opening)}\s*\{{([^}}]*)\}}", text)
    assert found is not None, f"no `{opening}` block in {path}"
    return [" ".join(statement.split()) for statement in found.group(1).split(";")]


def validated(text: str) -> None:
    """Raise ValueError unless `text`, interpolated as compose would, is a valid compose file.

    The variables are those of a .env made from the example (secrets filled in), never the
    checkout's own .env: compose refuses the example as shipped, which another test checks.
    """
    compose = PyOptions(apply_merge=True).from_yaml(interpolate(text, filled_env()))
    compose.validate()


def test_compose_file_is_valid_by_the_compose_specification() -> None:
    validated(COMPOSE.read_text())


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ('restart: "no"', "restart: sometimes"),
        ("    healthcheck:", "    healthchek:"),
        ("condition: service_healthy", "condition: service_happy"),
        ("networks: [backend]", "networks: [backnd]"),
        ('"${HTTP_PORT:-8000}:8000"', '"${HTTP_PORT:-8000}:80000"'),
        ("interval: 5s", "interval: 5 parsecs"),
        ("replicas: 2", "replicas: two"),
        ("  grafana-data:\n", "  grafana-data: 7\n"),
        ("      - --storage.tsdb.path=/prometheus", "      - storage: /prometheus"),
    ],
)
def test_compose_specification_refuses_a_broken_file(original: str, broken: str) -> None:
    text = COMPOSE.read_text()
    assert original in text
    with pytest.raises(ValueError, match=r"\S"):
        validated(text.replace(original, broken, 1))


def test_every_service_of_the_topology_is_defined(services: dict[str, Any]) -> None:
    assert set(services) == {
        "postgres",
        "redis",
        "migrate",
        "app",
        "nginx",
        "locust",
        "prometheus",
        "grafana",
    }


def test_postgres_is_checked_with_pg_isready_and_keeps_its_data_in_a_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume, target = postgres["volumes"][0].split(":")[:2]
    assert volume in compose["volumes"]
    assert target == "/var/lib/postgresql/data"


def test_redis_is_checked_with_redis_cli_ping_and_keeps_its_data_in_a_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    volume, target = redis["volumes"][0].split(":")[:2]
    assert volume in compose["volumes"]
    assert target == "/data"


def test_migrations_run_once_when_postgres_is_healthy(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["build"] == services["app"]["build"]
    assert migrate["command"] == ["migrate"]  # after the image's `python -m app`
    assert migrate["restart"] == "no"
    env = filled_env()
    assert interpolate(migrate["environment"]["BALANCER_DATABASE_URL"], env) == interpolate(
        services["app"]["environment"]["BALANCER_DATABASE_URL"], env
    )


def test_two_app_replicas_start_after_the_migrations_and_redis(services: dict[str, Any]) -> None:
    app = services["app"]
    assert app["deploy"]["replicas"] == 2
    assert app["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }
    assert "ports" not in app  # replicas share nginx's port, never the host's
    assert "command" not in app  # the image's own: python -m app serve


def test_app_gets_every_setting_it_requires(services: dict[str, Any]) -> None:
    required = {
        f"BALANCER_{field.name.upper()}"
        for field in dataclasses.fields(Settings)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    }
    assert required == {"BALANCER_DATABASE_URL", "BALANCER_REDIS_URL"}
    assert required | {"BALANCER_ADMIN_TOKEN"} <= set(services["app"]["environment"])


def test_app_settings_load_from_the_example_env_once_its_secrets_are_set(
    services: dict[str, Any],
) -> None:
    env = filled_env()
    environment = {
        name: interpolate(str(value), env) for name, value in services["app"]["environment"].items()
    }
    settings = load_settings(environment)
    assert settings.database_url.startswith(
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/"
    )
    assert settings.redis_url == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.admin_token == (env["BALANCER_ADMIN_TOKEN"],)
    assert settings.port == 8000


def test_example_env_ships_no_working_secret() -> None:
    env = example_env()
    for name in (*SECRETS, "LOADTEST_ADMIN_TOKEN"):
        assert env[name] == "", f"{name} must be empty in .env.example"


def test_compose_stops_with_the_example_env_as_shipped(services: dict[str, Any]) -> None:
    values = [
        *services["postgres"]["environment"].values(),
        *services["redis"]["command"],
        *services["app"]["environment"].values(),
    ]
    with pytest.raises(AssertionError, match=r"set POSTGRES_PASSWORD in \.env"):
        interpolate(" ".join(str(value) for value in values), example_env())


def test_compose_stops_when_a_secret_is_missing_from_env(services: dict[str, Any]) -> None:
    env = filled_env()
    for secret in SECRETS:
        missing = {name: value for name, value in env.items() if name != secret}
        values = [
            *services["postgres"]["environment"].values(),
            *services["redis"]["command"],
            *services["app"]["environment"].values(),
            *services["grafana"]["environment"].values(),
        ]
        with pytest.raises(AssertionError, match=secret):
            interpolate(" ".join(str(value) for value in values), missing)


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    used = {match.group(1) for match in VARIABLE.finditer(COMPOSE.read_text())}
    assert used
    assert used <= set(example_env()), used - set(example_env())


def test_env_file_with_the_secrets_is_not_committed() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_app_trusts_forwarded_headers_only_from_nginx(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    nginx_networks = services["nginx"]["networks"]
    shared = [name for name in services["app"]["networks"] if name in nginx_networks]
    assert shared == ["edge"]
    nginx_address = ipaddress.ip_address(nginx_networks["edge"]["ipv4_address"])
    subnet = ipaddress.ip_network(compose["networks"]["edge"]["ipam"]["config"][0]["subnet"])
    assert nginx_address in subnet
    assert services["app"]["environment"]["BALANCER_FORWARDED_ALLOW_IPS"] == str(nginx_address)


def test_only_the_app_and_the_migration_reach_postgres_and_redis(
    services: dict[str, Any],
) -> None:
    on_backend = {name for name, service in services.items() if "backend" in service["networks"]}
    assert on_backend == {"postgres", "redis", "migrate", "app"}
    for name in ("postgres", "redis", "migrate", "app"):
        assert "ports" not in services[name]


def test_nginx_publishes_port_8000_with_the_config_from_deploy(services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    assert [port.rsplit(":", 1)[1] for port in nginx["ports"]] == ["8000"]
    assert interpolate(nginx["ports"][0], example_env()) == "8000:8000"
    source, target, mode = nginx["volumes"][0].split(":")
    assert (ROOT / source).resolve() == NGINX_DIR
    assert mode == "ro"
    command = nginx["command"]
    assert command[command.index("-c") + 1] == f"{target}/nginx.conf"
    assert "daemon off;" in command
    assert nginx["depends_on"] == {"app": {"condition": "service_healthy"}}


def test_nginx_round_robins_over_the_app_replicas_with_passive_checks() -> None:
    upstream = block(NGINX_DIR / "nginx.conf", "upstream balancer")
    servers = [line for line in upstream if line.startswith("server ")]
    assert len(servers) == 1
    words = servers[0].split()
    assert words[1] == "app:8000"  # Docker's DNS: one address per replica
    assert "resolve" in words
    assert any(word.startswith("max_fails=") for word in words)
    assert any(word.startswith("fail_timeout=") for word in words)
    balancing = {"least_conn", "ip_hash", "hash", "random", "least_time"}
    assert not {line.split()[0] for line in upstream if line} & balancing
    directives = nginx_directives(NGINX_DIR / "nginx.conf")
    assert "listen 8000" in directives
    assert "resolver 127.0.0.11 valid=5s ipv6=off" in directives
    assert "include /etc/nginx/balancer/proxy.conf" in directives


def test_proxy_passes_client_address_protocol_and_request_id_to_the_app() -> None:
    directives = nginx_directives(NGINX_DIR / "proxy.conf")
    assert "proxy_pass http://balancer" in directives
    assert "proxy_set_header X-Forwarded-For $remote_addr" in directives
    assert "proxy_set_header X-Forwarded-Proto $scheme" in directives
    assert "proxy_set_header X-Request-ID $request_id" in directives
    assert "proxy_redirect off" in directives  # a Location must reach players unchanged
    next_upstream = [d for d in directives if d.startswith("proxy_next_upstream ")]
    assert next_upstream
    assert {"error", "timeout", "http_503"} <= set(next_upstream[0].split())
    assert "non_idempotent" not in next_upstream[0]  # a PATCH is never sent twice


@pytest.mark.e2e
def test_nginx_accepts_the_compose_config(tmp_path: Path) -> None:
    nginx = require_tool("nginx", install="apt-get install nginx-light", locate=find_nginx)
    config = (NGINX_DIR / "nginx.conf").read_text()
    # Only Docker resolves `app`, and only the mounted folder holds proxy.conf.
    config = config.replace("server app:8000", "server 127.0.0.1:8000")
    config = config.replace("/etc/nginx/balancer/", f"{NGINX_DIR}/")
    if nginx_version(nginx) < (1, 27, 3):  # `resolve` came to open-source nginx there
        config = config.replace(" resolve ", " ")
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp_path / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = config.replace("http {\n", f"http {{\n{temp_paths}", 1)
    (tmp_path / "nginx.conf").write_text(config)
    result = subprocess.run(
        [*nginx_command(nginx, tmp_path, tmp_path / "nginx.conf"), "-t"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_locust_targets_nginx_and_serves_its_ui_on_8089_of_this_host_only(
    services: dict[str, Any],
) -> None:
    locust = services["locust"]
    env = filled_env()
    command = locust["command"]
    assert command[command.index("--host") + 1] == "http://nginx:8000"
    locustfile = command[command.index("-f") + 1]
    source, target = locust["volumes"][0].split(":")[:2]
    assert locustfile.startswith(f"{Path(target).name}/")
    assert (ROOT / source).resolve() == ROOT / "loadtest"
    assert interpolate(locust["ports"][0], env) == "127.0.0.1:8089:8089"
    assert set(locust["networks"]) <= set(services["nginx"]["networks"])


def test_locust_never_gets_the_app_admin_token(services: dict[str, Any]) -> None:
    environment = services["locust"]["environment"]
    env = filled_env()
    assert "BALANCER_ADMIN_TOKEN" not in environment
    values = " ".join(interpolate(str(value), env) for value in environment.values())
    assert env["BALANCER_ADMIN_TOKEN"] not in values
    # a separate load-test token, empty unless one is given: no admin users by default
    assert interpolate(environment["LOADTEST_ADMIN_TOKEN"], example_env()) == ""
    given = {**env, "LOADTEST_ADMIN_TOKEN": "a-token-of-its-own"}
    assert interpolate(environment["LOADTEST_ADMIN_TOKEN"], given) == "a-token-of-its-own"


def test_make_loadtest_binds_the_ui_to_loopback_without_the_app_token() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nloadtest:", 1)[1].split("\n\n", 1)[0]
    assert "--web-host $${LOCUST_WEB_HOST:-127.0.0.1}" in recipe
    assert "env -u BALANCER_ADMIN_TOKEN" in recipe


def test_makefile_compose_targets_name_services_that_exist(services: dict[str, Any]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    named = re.findall(r"docker compose run --rm (\S+?);?\s", makefile)
    assert named
    assert set(named) <= set(services)


def _compose_plugin() -> bool:
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.e2e
def test_docker_compose_accepts_the_file_with_the_example_env_filled_in(tmp_path: Path) -> None:
    require(_compose_plugin(), "docker compose", "install Docker with its compose plugin")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in filled_env().items()))
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def mount(service: dict[str, Any], source: Path) -> tuple[str, str]:
    """(target, mode) of the bind mount of `source` (a repository path) in `service`."""
    for volume in service["volumes"]:
        parts = volume.split(":")
        if parts[0].startswith(".") and (ROOT / parts[0]).resolve() == source:
            return parts[1], parts[2] if len(parts) > 2 else "rw"
    raise AssertionError(f"{source} is not mounted in {service}")


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_every_image_is_pinned_to_a_version(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} names no tag"
        assert tag != "latest", f"{name}: {image}"
        if name in {"prometheus", "grafana"}:
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not a release"


def test_prometheus_and_grafana_listen_on_this_host_only_by_default(
    services: dict[str, Any],
) -> None:
    env = filled_env()
    assert [interpolate(port, env) for port in services["prometheus"]["ports"]] == [
        "127.0.0.1:9090:9090"
    ]
    assert [interpolate(port, env) for port in services["grafana"]["ports"]] == [
        "127.0.0.1:3000:3000"
    ]
    moved = {**env, "GRAFANA_HOST": "10.0.0.5", "PROMETHEUS_PORT": "19090"}
    assert interpolate(services["grafana"]["ports"][0], moved) == "10.0.0.5:3000:3000"
    assert interpolate(services["prometheus"]["ports"][0], moved) == "127.0.0.1:19090:9090"


def test_prometheus_scrapes_every_app_replica_directly_and_never_nginx(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    prometheus = services["prometheus"]
    target, mode = mount(prometheus, PROMETHEUS_CONFIG.parent)
    assert mode == "ro"
    assert f"--config.file={target}/{PROMETHEUS_CONFIG.name}" in prometheus["command"]
    volume, data = next(v for v in prometheus["volumes"] if not v.startswith(".")).split(":")
    assert volume in compose["volumes"]
    assert f"--storage.tsdb.path={data}" in prometheus["command"]

    (job,) = scrape_jobs().values()
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "static_configs" not in job
    (discovery,) = job["dns_sd_configs"]
    # Docker's DNS answers a service name with every replica's address (A records).
    assert discovery["names"] == ["app"]
    assert discovery["type"] == "A"
    assert str(discovery["port"]) == services["app"]["environment"]["BALANCER_PORT"]
    # The replicas are reachable from Prometheus on a network nginx is not the way into.
    shared = set(prometheus["networks"]) & set(services["app"]["networks"])
    assert shared == {"monitoring"}
    on_monitoring = {
        name for name, service in services.items() if "monitoring" in service["networks"]
    }
    assert on_monitoring == {"app", "prometheus"}
    assert not set(prometheus["networks"]) & set(services["nginx"]["networks"])
    assert "monitoring" not in services["nginx"]["networks"]


def test_prometheus_sends_the_metrics_token_the_app_asks_for(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    (job,) = scrape_jobs().values()
    assert job["authorization"] == {"type": "Bearer", "credentials_file": METRICS_SECRET}
    (secret,) = services["prometheus"]["secrets"]
    assert f"/run/secrets/{secret}" == METRICS_SECRET  # compose's default target
    variable = compose["secrets"][secret]["environment"]
    assert services["app"]["environment"]["BALANCER_METRICS_TOKEN"] == f"${{{variable}:-}}"
    # Unset, the token is empty and /metrics stays open, as the app's default.
    assert interpolate(services["app"]["environment"]["BALANCER_METRICS_TOKEN"], filled_env()) == ""


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    provisioning, mode = mount(grafana, GRAFANA_DIR / "provisioning")
    assert (provisioning, mode) == ("/etc/grafana/provisioning", "ro")
    dashboards, mode = mount(grafana, GRAFANA_DIR / "dashboards")
    assert mode == "ro"

    (datasource,) = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert [port.rsplit(":", 1)[1] for port in services["prometheus"]["ports"]] == ["9090"]
    assert set(grafana["networks"]) & set(services["prometheus"]["networks"])
    assert not set(grafana["networks"]) & set(services["app"]["networks"])
    global_config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]
    assert datasource["jsonData"]["timeInterval"] == global_config["scrape_interval"]

    (provider,) = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "balancer.yml").read_text()
    )["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == dashboards
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(dashboards)
    assert (GRAFANA_DIR / "dashboards" / Path(home).name).is_file()


def test_grafana_has_no_sign_up_no_anonymous_access_and_no_calls_home(
    services: dict[str, Any],
) -> None:
    environment = services["grafana"]["environment"]
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_ANALYTICS_REPORTING_ENABLED"] == "false"
    assert environment["GF_ANALYTICS_CHECK_FOR_UPDATES"] == "false"
    assert "GRAFANA_ADMIN_PASSWORD" in environment["GF_SECURITY_ADMIN_PASSWORD"]


@pytest.mark.e2e
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = require_tool("promtool", install="apt-get install prometheus")
    # promtool wants the token file to exist: only the container has compose's secret.
    token = tmp_path / "metrics-token"
    token.write_text(secrets.token_urlsafe(32))
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.read_text().replace(METRICS_SECRET, str(token)))
    result = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
