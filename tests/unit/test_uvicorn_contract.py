"""What the service relies on in uvicorn, checked against the installed release.

The viewer edge (app/presentation/edge/protocol.py) answers redirects without uvicorn; the
connections it hands over, the worker's server and the supervisor (server.py) still use
uvicorn, some of it beyond the documented API. pyproject.toml pins the release these were
read from; these tests fail loudly on any other, naming what changed.

Upgrading uvicorn: move the pin, run this file and fix what it names (server.py's
`Supervisor` repeats four `Multiprocess` methods: compare them with the new release before
updating their digests), run the e2e redirect suite in both modes (`BALANCER_FAST_PATH` on
and off: tests/e2e/test_server.py, test_ratelimit.py, test_geo.py, test_limits.py), and
`make bench` for the figures.
"""

import asyncio
import functools
import hashlib
import importlib.metadata
import inspect
from typing import Any

import pytest
import uvicorn
import uvicorn.config
from hypothesis import given
from hypothesis import strategies as st
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import Server, ServerState
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from app.presentation.edge.forwarded import TrustedProxies

PINNED = ((0, 54), (0, 55))  # >=0.54,<0.55, as pyproject.toml says


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_the_installed_uvicorn_is_the_release_the_code_was_written_for() -> None:
    version = importlib.metadata.version("uvicorn")
    low, high = PINNED
    assert low <= _release(version) < high, (
        f"uvicorn {version} is installed; the service is written for uvicorn >=0.54,<0.55 "
        "(pyproject.toml). Another release can change what server.py and the app's path of "
        "protocol.py rely on: follow the upgrade steps in tests/unit/test_uvicorn_contract.py "
        "before moving the pin."
    )


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_server_calls_the_http_protocol_as_the_edge_expects() -> None:
    # Server.startup(): config.http_protocol_class(config=, server_state=, app_state=, _loop=)
    assert "http_protocol_class(" in inspect.getsource(Server.startup)
    for keyword in ("config=config", "server_state=", "app_state=", "_loop=_loop"):
        assert keyword in inspect.getsource(Server.startup), keyword

    factory: Any = functools.partial(HttpToolsProtocol)

    config = Config(
        lambda scope, receive, send: None, http=factory, lifespan="off", log_config=None
    )
    config.load()
    protocol_class: Any = config.http_protocol_class
    assert protocol_class is factory  # a callable `http` is used as it is


def test_config_has_what_the_protocols_and_server_read() -> None:
    config = Config(lambda scope, receive, send: None, proxy_headers=True, forwarded_allow_ips="*")
    config.load()
    for name in (
        "loaded",
        "loaded_app",
        "forwarded_allow_ips",
        "proxy_headers",
        "timeout_keep_alive",
        "timeout_worker_healthcheck",
        "workers",
    ):
        assert hasattr(config, name), name
    assert callable(config.bind_socket)
    # the edge finds the app inside uvicorn's wrappers by their `app` attribute
    assert isinstance(config.loaded_app, ProxyHeadersMiddleware)
    assert config.loaded_app.app is not None
    # the status a worker that gave up starting exits with, which stops the supervisor
    assert getattr(uvicorn.config, "STARTUP_FAILURE", None) == 3


def test_server_state_holds_what_the_edge_updates() -> None:
    state = ServerState()
    assert isinstance(state.connections, set)
    assert isinstance(state.tasks, set)
    assert isinstance(state.default_headers, list)
    assert state.total_requests == 0


def test_the_server_has_the_hooks_the_balancer_server_overrides() -> None:
    for name, parameters in {
        "__init__": ["self", "config"],
        "run": ["self", "sockets"],
        "handle_exit": ["self", "sig", "frame"],
        "on_tick": ["self", "counter"],
        "shutdown": ["self", "sockets"],
    }.items():
        assert _parameters(getattr(Server, name)) == parameters, name
    assert inspect.iscoroutinefunction(Server.on_tick)
    assert inspect.iscoroutinefunction(Server.shutdown)
    server = Server(Config(lambda scope, receive, send: None))
    for name in ("should_exit", "started", "server_state", "config"):
        assert hasattr(server, name), name
    assert "self.servers" in inspect.getsource(Server.startup)  # the listeners shutdown closes
    # the drain adds `connection: close` to the default headers each tick
    assert "default_headers" in inspect.getsource(Server.on_tick)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_the_httptools_protocol_has_what_the_handed_over_connection_uses() -> None:
    assert _parameters(HttpToolsProtocol.__init__) == [
        "self",
        "config",
        "server_state",
        "app_state",
        "_loop",
    ]
    for name in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_response_complete",
        "send_400_response",
    ):
        assert callable(getattr(HttpToolsProtocol, name)), name
    assert _parameters(HttpToolsProtocol.send_400_response) == ["self", "msg"]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(1)

    config = Config(app, http="httptools", lifespan="off", log_config=None)
    config.load()
    protocol = HttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    for name in ("client", "flow", "connections", "loop", "timeout_keep_alive_task", "pipeline"):
        assert hasattr(protocol, name), name
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    cycle = protocol.cycle
    assert isinstance(cycle, RequestResponseCycle)
    # the fields BoundedHttpToolsProtocol and its sweeper read and set
    assert (cycle.more_body, cycle.response_complete, cycle.disconnected) == (False, False, False)
    assert isinstance(cycle.message_event, asyncio.Event)
    assert cycle.on_response == protocol.on_response_complete  # bound: our override runs
    assert callable(protocol.flow.pause_reading)
    for task in protocol.tasks:
        task.cancel()


# Digests of the uvicorn code `Supervisor` repeats or relies on (server.py): any change in the
# new release shows here; compare, update the copy, then the digest.
SUPERVISED = {
    "Multiprocess.init_processes": "6c69f2a36bf55750",
    "Multiprocess.keep_subprocess_alive": "3ba4980aa33bcecd",
    "Multiprocess.restart_all": "438dec6d95be9fcd",
    "Multiprocess.handle_ttin": "ebfc0650752a779d",
    "Process.server": "0bc0d378bdef89dd",
    "Process.__init__": "a8c85f799aae5b2c",
}


@pytest.mark.parametrize("name", sorted(SUPERVISED))
def test_the_supervisor_methods_copied_from_uvicorn_are_unchanged_there(name: str) -> None:
    owner, attribute = name.split(".")
    found = vars({"Multiprocess": Multiprocess, "Process": Process}[owner])[attribute]
    function: Any = found.fget if isinstance(found, property) else found
    digest = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    assert digest == SUPERVISED[name], (
        f"uvicorn's {name} changed: server.py's Supervisor/Worker repeat or rely on it"
    )


def test_the_supervisor_relies_on_the_process_internals_it_uses() -> None:
    assert _parameters(Process.__init__) == ["self", "config", "sockets"]
    assert _parameters(Multiprocess.__init__) == ["self", "config", "sockets"]
    for name in ("start", "kill", "join", "terminate", "is_alive", "wait_until_ready", "pid"):
        assert hasattr(Process, name), name
    server: Any = Process.server
    assert "self._server" in inspect.getsource(server.fget)
    assert _parameters(Process.is_alive) == ["self", "timeout"]
    for name in ("processes", "processes_num", "should_exit", "sockets", "config"):
        assert name in inspect.getsource(Multiprocess.__init__), name
    assert uvicorn.Server is Server


_HOSTS = st.sampled_from(
    [
        "127.0.0.1",
        "10.0.0.1",
        "203.0.113.7",
        "203.0.113.7:8080",
        "[2001:db8::1]:443",
        "[2001:db8::1]",
        "2001:db8::1",
        "::1",
        "unix:/tmp/s",
        "",
        " ",
        "a:b",
        "[::1",
        "198.51.100.2:x",
    ]
)


@given(
    forwarded=st.lists(_HOSTS, min_size=1, max_size=4).map(", ".join),
    trusted=st.sampled_from(["127.0.0.1", "127.0.0.1, 10.0.0.0/8", "*", "::1, unix:/tmp/s"]),
)
def test_the_edge_takes_the_client_from_forwarded_for_by_uvicorns_rule(
    forwarded: str, trusted: str
) -> None:
    """The edge's own X-Forwarded-For rule is uvicorn's (of the pinned release)."""
    uvicorn_rule = ProxyHeadersMiddleware(None, trusted).trusted_hosts  # type: ignore[arg-type]
    edge_rule = TrustedProxies(trusted)
    assert edge_rule.client(forwarded) == uvicorn_rule.get_trusted_client_address(forwarded)[0]
    for host in forwarded.split(","):
        assert (host.strip() in edge_rule) == (host.strip() in uvicorn_rule)
