"""Load test of the balancer: HLS players, broken links and a rare admin, every answer checked.

`make loadtest` opens the web UI on :8089; `make loadtest-headless` runs a fixed scenario.

Players ask for playlists and segments of videos on s1..s50 (a few servers are much more
popular than the rest), with and without signed query tokens. A small share of requests
carries bad video URLs: foreign and look-alike hosts, user info, other schemes, nothing.
An admin, when a load-test admin token is given (LOADTEST_ADMIN_TOKEN, never the
service's own BALANCER_ADMIN_TOKEN), switches the CDN host between two hosts now and then
and puts the original host back when it stops; it never touches the weights.

The web UI can change any option of a run (its form posts them all, shown or not), so what
the admin may do is fixed when Locust starts (`AdminGrant`): the token, the two CDN hosts,
and the one target the token is sent to. Neither the token nor the hosts are put into the
page (`include_in_web_ui=False`: `is_secret` only masks the input and still renders the
value into the page's source).

Every answer is checked: a redirect must carry the configured status and go to the CDN
(`<cdn>/<server><path>?<query>`) or to exactly the requested URL; a bad URL must get a 4xx
problem+json without `Location`. At the end the origin share of the redirects is compared
with the weights read from `GET /config` at the start. The process exits with 1 when a
check failed, the share is off, the weights changed during the run, or transport errors
(refused connections, timeouts) are above `--max-failure-ratio`; with 0 otherwise.

With `--processes` or `--master`/`--worker` each worker sends its counts to the master
with its stats reports and the master judges the sum; a worker never judges on its own.

Rate limits: every user sends from this machine's address, so a balancer with a default rate
limit sees one client and answers most of the run 429. At the start the run says which
limit is on and what it will do; `--spread-clients` (LOADTEST_SPREAD_CLIENTS=1) gives each
user an address of its own in `X-Forwarded-For` (198.18.0.0/15, the benchmarking range), for
a balancer that trusts this machine as a proxy (BALANCER_FORWARDED_ALLOW_IPS, 127.0.0.1 by
default). A 429 is counted as a failure (the run could not measure what it asked), never as
a broken rule.
"""

import ipaddress
import itertools
import json
import logging
import random
import secrets
import time
import urllib.request
from argparse import Namespace
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode, urlsplit

import gevent  # type: ignore[import-untyped]
from locust import between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastHttpUser, ResponseContextManager
from locust.env import Environment
from locust.event import EventHook
from locust.exception import StopUser
from locust.runners import WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

log = logging.getLogger("loadtest")

PROBLEM_JSON = "application/problem+json"
SERVERS = tuple(f"s{number}" for number in range(1, 51))
# Popularity falls with rank, as it does for real catalogues: s1 gets ~10x the traffic of s50.
SERVER_WEIGHTS = tuple(1 / rank**0.6 for rank in range(1, len(SERVERS) + 1))
RENDITIONS = ("360p", "480p", "720p", "1080p")
MIN_SLACK = 5  # requests: each server worker may stand inside a block of the sequence
RATE_LIMITED = 429
# RFC 2544's benchmarking range: addresses that are nobody's, 131,072 of them.
CLIENTS = ipaddress.ip_network("198.18.0.0/15")
# What one player asks per second: a wait of 10-100 ms (55 ms on average) between requests.
PLAYER_REQUESTS_PER_SECOND = 1 / 0.055

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Mismatch(Exception):
    """A response that breaks the balancer's rules."""


@dataclass(frozen=True)
class ServedConfig:
    """What `GET /config` said at the start of the run: the rules responses are checked by."""

    version: int
    cdn_host: str
    redirect_status: int
    origin_domain: str
    split: tuple[int, int]
    server_rules: Mapping[str, tuple[int, int]]
    # The default per-client limit: (capacity, refill per second); None: off.
    rate_limit: tuple[int, float] | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "ServedConfig":
        limit = body.get("rate_limit")
        return cls(
            version=int(body["version"]),
            cdn_host=str(body["cdn_host"]),
            redirect_status=int(body["redirect_status"]),
            origin_domain=str(body["origin_domains"][0]),
            split=(int(body["cdn_weight"]), int(body["origin_weight"])),
            server_rules={
                server: (int(rule["cdn_weight"]), int(rule["origin_weight"]))
                for server, rule in body["server_rules"].items()
            },
            rate_limit=(
                None if not limit else (int(limit["capacity"]), float(limit["refill_per_second"]))
            ),
        )

    def origin_share(self, server: str) -> float:
        cdn, origin = self.server_rules.get(server, self.split)
        return origin / (cdn + origin)

    def weights(self) -> str:
        rules = ", ".join(f"{s} {c}:{o}" for s, (c, o) in sorted(self.server_rules.items()))
        return f"{self.split[0]}:{self.split[1]}" + (f" ({rules})" if rules else "")


def cdn_base(cdn_host: str) -> str:
    """`cdn.example.com` -> `http://cdn.example.com`, as the balancer builds CDN locations."""
    scheme, sep, authority = cdn_host.partition("://")
    if not sep:
        scheme, authority = "http", cdn_host
    return f"{scheme.lower()}://{authority.removesuffix('/').lower()}"


@dataclass
class Run:
    """One test run in this process: its rules, its counts and what the admin changed."""

    config: ServedConfig | None = None
    config_error: str = ""
    end_config: ServedConfig | None = None
    cdn_bases: frozenset[str] = frozenset()
    counts: Counter[str] = field(default_factory=Counter)
    started: bool = False
    problems: list[str] | None = None

    def count(self, key: str) -> None:
        self.counts[key] += 1

    def drain(self) -> dict[str, int]:
        """The counts since the last call, for the master."""
        counts, self.counts = dict(self.counts), Counter()
        return counts


run = Run()


def read_config(host: str, timeout: float = 5) -> ServedConfig:
    url = f"{host.rstrip('/')}/config"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the host must be an http(s) URL, not {host!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - checked above
        return ServedConfig.parse(json.load(response))


# --- what a response must look like -------------------------------------------------------


def redirect_target(status: int, location: str | list[str] | None, video: str, server: str) -> str:
    """`cdn` or `origin` for a redirect that keeps the rules; raises Mismatch otherwise."""
    config = run.config
    assert config is not None
    if status != config.redirect_status:
        raise Mismatch(f"status {status}, expected the configured {config.redirect_status}")
    if not isinstance(location, str):
        raise Mismatch(f"expected one Location header, got {location!r}")
    if location == video:
        return "origin"
    parts = urlsplit(location)
    base = f"{parts.scheme}://{parts.netloc}"
    if base not in run.cdn_bases:
        raise Mismatch(
            f"Location {location} is neither the CDN ({', '.join(sorted(run.cdn_bases))}) "
            f"nor the requested URL {video}"
        )
    requested = urlsplit(video)
    expected = f"/{server}{requested.path}" + (f"?{requested.query}" if requested.query else "")
    actual = parts.path + (f"?{parts.query}" if parts.query else "")
    if actual != expected:
        raise Mismatch(f"CDN Location path and query {actual!r}, expected {expected!r}")
    return "cdn"


def check_refusal(status: int, content_type: str | list[str] | None, location: object) -> None:
    """A bad video URL must get a 4xx problem document and no redirect anywhere."""
    if location is not None:
        raise Mismatch(f"bad URL answered {status} with Location {location}")
    if not 400 <= status < 500:
        raise Mismatch(f"bad URL answered {status}, expected a 4xx")
    if not isinstance(content_type, str) or not content_type.startswith(PROBLEM_JSON):
        raise Mismatch(f"bad URL answered content-type {content_type!r}, expected {PROBLEM_JSON}")


def rate_limited(response: ResponseContextManager) -> None:
    """A 429 keeps the balancer's rules (a client over its limit), but the run did not get
    the redirect it asked for: a failure, counted apart from broken rules."""
    run.count("rate-limited")
    response.failure("429 rate-limited: the balancer's rate limit (see the start of the run)")  # type: ignore[no-untyped-call]


def checked(response: ResponseContextManager, check: Callable[[], T]) -> T | None:
    """Run `check` on a response inside its `with` block and report the outcome to Locust.

    Transport errors (status 0) are left to Locust, which reports them as failures."""
    if response.status_code == 0:
        return None
    try:
        result = check()
    except Mismatch as mismatch:
        run.count("mismatch")
        response.failure(str(mismatch))  # type: ignore[no-untyped-call]
        return None
    response.success()  # type: ignore[no-untyped-call]
    return result


# --- the users ----------------------------------------------------------------------------


@dataclass
class Video:
    scheme: str
    server: str
    domain: str
    stem: str  # /video/<id>/<slug>
    query: str

    def url(self, path: str) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.server}.{self.domain}{self.stem}{path}{query}"


def pick_video(domain: str) -> Video:
    server = random.choices(SERVERS, weights=SERVER_WEIGHTS)[0]
    scheme = "https" if random.random() < 0.3 else "http"
    slug = secrets.token_urlsafe(8)
    stem = f"/video/{random.randint(1, 99_999)}/{slug}"
    query = ""
    if random.random() < 0.6:  # signed URLs: the token must survive the redirect
        query = urlencode({"token": secrets.token_hex(16), "exp": int(time.time()) + 3600})
    return Video(scheme, server, domain, stem, query)


def bad_videos(domain: str) -> dict[str, str | None]:
    """Video URLs the balancer must refuse; None sends no `video` parameter at all."""
    return {
        "foreign host": "http://evil.example/video/1488/x.m3u8",
        "look-alike host": f"http://s1.{domain}.evil.example/video/1488/x.m3u8",
        "user info": f"http://s1.{domain}@evil.example/video/1488/x.m3u8",
        "ftp scheme": f"ftp://s1.{domain}/video/1488/x.m3u8",
        "dot segments": f"http://s1.{domain}/video/../../etc/passwd",
        "empty video": "",
        "missing video": None,
    }


# Each process draws its addresses from its own random place in the range: the processes of
# a distributed run rarely share one.
_addresses = itertools.count(random.randrange(CLIENTS.num_addresses))


def client_address() -> str:
    """An address of its own for the next user (X-Forwarded-For)."""
    return str(CLIENTS[next(_addresses) % CLIENTS.num_addresses])


class Player(FastHttpUser):
    """A viewer's player: a playlist, then segments one after another, sometimes zapping."""

    weight = 20
    wait_time = between(0.01, 0.1)

    def on_start(self) -> None:
        self.domain = run.config.origin_domain if run.config else "origin-cluster"
        self.video = pick_video(self.domain)
        self.rendition = random.choice(RENDITIONS)
        self.segment = 0
        spread = options(self.environment).spread_clients
        self.viewer = {"X-Forwarded-For": client_address()} if spread else {}

    def redirect(self, video: Video, path: str, name: str) -> None:
        if run.config is None:
            raise StopUser  # nothing to check against; the run is being stopped
        url = video.url(path)
        with self.client.get(
            f"/?{urlencode({'video': url})}",
            name=f"/?video=[{name}]",
            headers=self.viewer,
            allow_redirects=False,
            catch_response=True,
        ) as response:
            headers = response.headers or {}
            if response.status_code == RATE_LIMITED:
                rate_limited(response)
                return
            target = checked(
                response,
                lambda: redirect_target(
                    response.status_code, headers.get("location"), url, video.server
                ),
            )
        if target is not None:
            run.count(f"{target} {video.server}")

    @task(30)
    def next_segment(self) -> None:
        self.segment += 1
        self.redirect(self.video, f"/{self.rendition}/seg-{self.segment:05d}.ts", "segment")

    @task(3)
    def variant_playlist(self) -> None:
        self.rendition = random.choice(RENDITIONS)
        self.redirect(self.video, f"/{self.rendition}.m3u8", "variant playlist")

    @task(2)
    def zap(self) -> None:
        self.video = pick_video(self.domain)
        self.segment = 0
        self.redirect(self.video, ".m3u8", "master playlist")

    @task(1)
    def broken_link(self) -> None:
        """Scanners and broken embeds hit the same endpoint; about 3% of the requests."""
        if run.config is None:
            raise StopUser
        kind, video = random.choice(list(bad_videos(self.domain).items()))
        query = "" if video is None else f"?{urlencode({'video': video})}"
        with self.client.get(
            f"/{query}",
            name=f"/?video=[bad: {kind}]",
            headers=self.viewer,
            allow_redirects=False,
            catch_response=True,
        ) as response:
            headers = response.headers or {}
            checked(
                response,
                lambda: check_refusal(
                    response.status_code, headers.get("content-type"), headers.get("location")
                ),
            )


@dataclass(frozen=True)
class AdminGrant:
    """What admin users may do, fixed from the command line and environment at start-up."""

    token: str = ""
    target: str = ""  # the only host the token is ever sent to
    cdn_hosts: tuple[str, str] = ("", "")

    def refusal(self, host: str | None) -> str | None:
        """Why admin users must stay out of a run against `host`, or None."""
        if not self.token:
            return "no --admin-token (LOADTEST_ADMIN_TOKEN)"
        if not all(self.cdn_hosts):
            return "not two --admin-cdn-hosts"
        if (host or "").rstrip("/") != self.target.rstrip("/"):
            return f"the run targets {host}, the admin token was given for {self.target}"
        return None


grant = AdminGrant()


class Admin(FastHttpUser):
    """An operator moving traffic between two CDN hosts: the 10th user, then one in 21.

    Only `cdn_host` changes, so the share check stays valid. The host found at the start is
    put back when the admin stops.
    """

    weight = 1
    wait_time = between(5, 15)
    logged_skip: ClassVar[bool] = False

    def on_start(self) -> None:
        self.auth = {"Authorization": f"Bearer {grant.token}"}
        self.hosts = grant.cdn_hosts
        self.changed = False
        refusal = grant.refusal(self.host)
        self.idle = refusal is not None or run.config is None
        if refusal is not None and not Admin.logged_skip:
            log.warning("admin users stay out: %s", refusal)
            Admin.logged_skip = True

    @task
    def move_cdn_host(self) -> None:
        if self.idle:
            raise StopUser  # from a task, unlike from on_start, Locust stops the user quietly
        with self.client.get("/config", name="/config", catch_response=True) as response:
            current = checked(response, lambda: config_answer(response))
            etag = (response.headers or {}).get("etag")
        if current is None:
            return
        target = self.hosts[1] if current.cdn_host == self.hosts[0] else self.hosts[0]
        headers = {**self.auth, "If-Match": etag if isinstance(etag, str) else "*"}
        self.patch({"cdn_host": target, "comment": f"loadtest: to {target}"}, headers, "")
        self.changed = True

    def on_stop(self) -> None:
        if self.changed and run.config is not None:
            host = run.config.cdn_host
            self.patch({"cdn_host": host, "comment": "loadtest: restore"}, self.auth, " [restore]")

    def patch(self, body: dict[str, str], headers: dict[str, str], label: str) -> None:
        with self.client.patch(
            "/config", json=body, headers=headers, name=f"/config{label}", catch_response=True
        ) as response:
            if response.status_code == 412:  # another admin won the race: a correct answer
                checked(response, lambda: None)
            else:
                checked(response, lambda: config_answer(response, body["cdn_host"]))


def config_answer(response: ResponseContextManager, cdn_host: str | None = None) -> ServedConfig:
    if response.status_code != 200:
        raise Mismatch(f"/config answered {response.status_code}: {(response.text or '')[:200]}")
    config = ServedConfig.parse(response.json())
    assert run.config is not None
    if config.weights() != run.config.weights():
        raise Mismatch(
            f"weights are {config.weights()}; the run started with {run.config.weights()}"
        )
    if cdn_host is not None and config.cdn_host != cdn_host:
        raise Mismatch(f"cdn_host is {config.cdn_host} after setting {cdn_host}")
    return config


def hosts_option(environment: Environment) -> tuple[str, str]:
    first, _, second = str(options(environment).admin_cdn_hosts).partition(",")
    return first.strip(), second.strip()


# --- the run: options, counts, verdict ----------------------------------------------------


def options(environment: Environment) -> Namespace:
    parsed: Namespace | None = environment.parsed_options
    assert parsed is not None
    return parsed


def on(hook: EventHook) -> Callable[[F], F]:
    """`@on(events.x)`: Locust's own `add_listener` decorator is untyped."""

    def register(handler: F) -> F:
        hook.add_listener(handler)  # type: ignore[no-untyped-call]
        return handler

    return register


@on(events.init_command_line_parser)
def add_options(parser: LocustArgumentParser, **_: object) -> None:
    parser.add_argument(
        "--admin-token",
        env_var="LOADTEST_ADMIN_TOKEN",
        default="",
        include_in_web_ui=False,
        help="a bearer token for PATCH /config on --host only, issued for load tests; "
        "without one the admin users stay out",
    )
    parser.add_argument(
        "--admin-cdn-hosts",
        env_var="LOADTEST_ADMIN_CDN_HOSTS",
        default="cdn.example.com,cdn2.example.com",
        include_in_web_ui=False,
        help="the two CDN hosts the admin switches between",
    )
    parser.add_argument(
        "--spread-clients",
        env_var="LOADTEST_SPREAD_CLIENTS",
        action="store_true",
        default=False,
        help="each user sends X-Forwarded-For with an address of its own (198.18.0.0/15), "
        "for a balancer that trusts this machine as a proxy (BALANCER_FORWARDED_ALLOW_IPS): "
        "its per-client rate limit then applies per user, not to the whole run",
    )
    parser.add_argument(
        "--share-tolerance",
        env_var="LOADTEST_SHARE_TOLERANCE",
        type=float,
        default=0.02,
        help="allowed distance of the origin share from the configured one (0.02 = 2 points)",
    )
    parser.add_argument(
        "--max-failure-ratio",
        env_var="LOADTEST_MAX_FAILURE_RATIO",
        type=float,
        default=0.01,
        help="transport errors tolerated; any broken rule fails the run regardless",
    )


@on(events.init)
def fix_admin_grant(environment: Environment, **_: object) -> None:
    global grant  # noqa: PLW0603 - once per process, before any run
    grant = AdminGrant(
        token=str(options(environment).admin_token),
        target=environment.host or "",
        cdn_hosts=hosts_option(environment),
    )


@on(events.test_start)
def start_run(environment: Environment, **_: object) -> None:
    global run  # noqa: PLW0603 - one run per process at a time; test_start starts a new one
    run = Run(started=True)
    try:
        run.config = read_config(environment.host or "")
    except (OSError, ValueError, KeyError) as error:
        run.config_error = f"GET /config failed at the start: {error!r}"
        log.error(run.config_error)  # noqa: TRY400 - the reason is all there is to say
        if environment.runner is not None and not isinstance(environment.runner, WorkerRunner):
            gevent.spawn(environment.runner.quit)
        return
    hosts = (run.config.cdn_host, *grant.cdn_hosts)
    run.cdn_bases = frozenset(cdn_base(host) for host in hosts if host)
    log.info(
        "checking against config version %d: weights %s, status %d, CDN %s",
        run.config.version,
        run.config.weights(),
        run.config.redirect_status,
        ", ".join(sorted(run.cdn_bases)),
    )
    if run.config.rate_limit is not None and not isinstance(environment.runner, WorkerRunner):
        warn_about_the_rate_limit(environment, run.config.rate_limit)


def warn_about_the_rate_limit(environment: Environment, limit: tuple[int, float]) -> None:
    """Say which default limit the balancer applies and what it will do to this run."""
    capacity, refill = limit
    users = int(getattr(environment.runner, "target_user_count", 0) or 0)
    users = users or int(getattr(options(environment), "num_users", 0) or 0)
    players = users * Player.weight / (Player.weight + Admin.weight)
    rate = players * PLAYER_REQUESTS_PER_SECOND
    what = (
        f"the balancer's default rate limit is on: {capacity} requests at once, then "
        f"{refill:g}/s per client"
    )
    if options(environment).spread_clients:
        each = PLAYER_REQUESTS_PER_SECOND
        fits = "within it" if each <= refill else "above it: expect 429s"
        log.info(
            "%s; each user has an address of its own (X-Forwarded-For), about %.0f requests/s "
            "each: %s",
            what,
            each,
            fits,
        )
        return
    refused = max(0.0, 1 - refill / rate) if rate else 0.0
    log.warning(
        "%s. All %d users here are one client (this machine's address): together they ask "
        "about %.0f requests/s, so after the first %d about %.0f%% are answered 429 and count as "
        "failures (the run fails above %.1f%%). If the balancer trusts this machine as a proxy "
        "(BALANCER_FORWARDED_ALLOW_IPS, 127.0.0.1 by default), run with --spread-clients "
        "(LOADTEST_SPREAD_CLIENTS=1): each user then has an address of its own; or turn the "
        'limit off for the test (PATCH /config {"rate_limit": null}).',
        what,
        users,
        rate,
        capacity,
        refused * 100,
        options(environment).max_failure_ratio * 100,
    )


@on(events.test_stop)
def stop_run(environment: Environment, **_: object) -> None:
    if isinstance(environment.runner, WorkerRunner) or run.config is None:
        return
    try:
        run.end_config = read_config(environment.host or "")
    except (OSError, ValueError, KeyError) as error:
        log.warning("GET /config failed at the end: %r", error)
    if not options(environment).headless:  # the web UI: judge every run as it ends
        report(environment)


@on(events.report_to_master)
def send_counts(data: dict[str, Any], **_: object) -> None:
    data["balancer_counts"] = run.drain()


@on(events.worker_report)
def add_counts(data: dict[str, Any], **_: object) -> None:
    run.counts.update(data.get("balancer_counts", {}))


@on(events.quitting)
def set_exit_code(environment: Environment, **_: object) -> None:
    if isinstance(environment.runner, WorkerRunner) or not run.started:
        return
    if options(environment).csv_prefix:
        # Locust rewrites its CSV files every second but not at exit: let it write the
        # final numbers once more before the files are closed.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.1)
    environment.process_exit_code = 1 if report(environment) else 0


def report(environment: Environment) -> list[str]:
    """Log the verdict on the current run, once; the reasons it failed, if any."""
    if run.problems is not None:
        return run.problems
    problems = run.problems = verdict(environment)
    total = environment.stats.total
    log.info(
        "totals: %d requests, %.0f req/s, %d failures (%.2f%%)",
        total.num_requests,
        total.total_rps,
        total.num_failures,
        total.fail_ratio * 100,
    )
    for problem in problems:
        log.error("load test failed: %s", problem)
    frequent = sorted(environment.stats.errors.values(), key=lambda e: -e.occurrences)[:3]
    for error in frequent:
        log.warning("%d x %s %s: %s", error.occurrences, error.method, error.name, error.error)
    if not problems:
        log.info("load test passed: %s", share_summary())
    return problems


def verdict(environment: Environment) -> list[str]:
    if run.config is None:
        return [run.config_error or "no configuration was read"]
    problems: list[str] = []
    if run.counts["mismatch"]:
        problems.append(f"{run.counts['mismatch']} responses broke the rules (see the failures)")
    total = environment.stats.total
    if total.fail_ratio > options(environment).max_failure_ratio:
        limited = run.counts["rate-limited"]
        why = (
            f" ({limited} answered 429 by the balancer's rate limit: see the warning at the start)"
            if limited
            else ""
        )
        problems.append(
            f"failure ratio {total.fail_ratio:.2%} of {total.num_requests} requests is above "
            f"{options(environment).max_failure_ratio:.2%}{why}"
        )
    exceptions = len(environment.runner.exceptions) if environment.runner else 0
    if exceptions:
        problems.append(f"{exceptions} errors in the locustfile (see the exceptions)")
    if run.end_config is not None and run.end_config.weights() != run.config.weights():
        problems.append(
            f"the weights changed during the run ({run.config.weights()} -> "
            f"{run.end_config.weights()}); the split cannot be checked"
        )
    else:
        problems.extend(share_problems(options(environment).share_tolerance))
    return problems


def split_counts() -> tuple[int, int, float]:
    """Redirects, origin redirects, and origin redirects the weights call for."""
    assert run.config is not None
    redirects = origin = 0
    expected = 0.0
    for key, count in run.counts.items():
        target, _, server = key.partition(" ")
        if target in ("cdn", "origin"):
            redirects += count
            origin += count if target == "origin" else 0
            expected += count * run.config.origin_share(server)
    return redirects, origin, expected


def share_problems(tolerance: float) -> list[str]:
    redirects, origin, expected = split_counts()
    if redirects == 0:
        return ["no redirect was answered"]
    if abs(origin - expected) > max(tolerance * redirects, MIN_SLACK):
        return [f"{share_summary()}: more than {tolerance * 100:.1f} points apart"]
    return []


def share_summary() -> str:
    assert run.config is not None
    redirects, origin, expected = split_counts()
    share = origin / redirects if redirects else 0.0
    return (
        f"origin share {share:.2%} ({origin} of {redirects} redirects), "
        f"configured {expected / max(redirects, 1):.2%} (weights {run.config.weights()})"
    )
