"""`GET /metrics` (Prometheus text, every worker of the instance) and `GET /stats`,
`POST /stats/reset` (admin: every worker of every instance, since the last reset)."""

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field

from app.application.metrics import MAX_SERVERS, GetStats, ReadInstanceFigures, ResetStats, cdn_host
from app.application.offload import off_loop
from app.application.ports import DURATION_BUCKETS, LOOP_BUCKETS, THROUGHPUT_BUCKETS, Figures
from app.domain.regions import DEFAULT_REGION
from app.presentation.api.auth import Access, MetricsAuth
from app.presentation.api.schemas import PROBLEM_RESPONSE


class SteeringPathwayBody(BaseModel):
    requests: int = Field(description="Steering manifests answered to players on this pathway.")
    throughput_reports: int = Field(description="Of them, reloads that reported a throughput.")
    throughput_bps_mean: float | None = Field(
        description="The mean throughput reported (bits per second); null without reports."
    )


class StatsBody(BaseModel):
    scope: str = Field(
        description="`cluster`: every worker of every instance, from Redis; `instance`: "
        "Redis could not be read, so only this instance's workers, since it started."
    )
    since: datetime = Field(description="When counting started (the last reset).")
    total: int = Field(description="Redirects answered (`GET /` and `HEAD /`).")
    by_target: dict[str, int]
    by_server: dict[str, int] = Field(
        description=f"Redirects by origin server label, heaviest first: at most the "
        f"{MAX_SERVERS:,} heaviest labels, each count within `by_server_error` of the true one."
    )
    by_server_error: int = Field(
        description="How far a `by_server` count may be from the true one, and the most "
        "redirects a server not listed can have had; 0 (exact) while no more than "
        f"{MAX_SERVERS:,} distinct labels were seen since the last reset."
    )
    by_cdn_host: dict[str, int]
    by_region: dict[str, int]
    rejected: dict[str, int] = Field(description="Problem answers of the redirect path by code.")
    rate_limited: int
    configured_origin_share: float | None = Field(
        description="The global split's origin share now."
    )
    achieved_origin_share: float | None = Field(description="`by_target.origin / total`.")
    requests_per_second: float | None = Field(
        description="Cluster: redirects per second over the last 10 s; instance: the average "
        "since it started."
    )
    note: str | None = None
    steering: dict[str, SteeringPathwayBody] = Field(
        default_factory=dict,
        description="Content steering, by the pathway players said they were on "
        '(`_HLS_pathway`, `_DASH_pathway`; `""` when absent or not a pathway of their '
        "pool), busiest first; empty while no steering manifest was answered.",
        examples=[
            {"cdn-a": {"requests": 42, "throughput_reports": 40, "throughput_bps_mean": 4.8e6}}
        ],
    )


class InstanceCollector(Collector):
    """The merged figures of every worker as Prometheus metric families, and each live
    worker's process metrics labelled with its pid."""

    def __init__(self, read: Callable[[], tuple[Figures, list[Figures]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        merged, each = self._read()
        yield from figure_families(merged)
        yield from process_families(one.pid for one in each if one.live)


def figure_families(figures: Figures) -> Iterator[Metric]:
    redirects = CounterMetricFamily(
        "balancer_redirects",
        "Redirects answered, by target, CDN host (empty for the origin), status and region.",
        labels=["target", "cdn_host", "status", "region"],
    )
    by_label: dict[tuple[str, str, str, str], int] = {}
    for (target, cdn, status, region), count in figures.redirects.items():
        key = (str(target), cdn_host(cdn) if cdn else "", str(status), region)
        by_label[key] = by_label.get(key, 0) + count
    for labels, count in sorted(by_label.items()):
        redirects.add_metric(list(labels), count)
    yield redirects

    fallback = CounterMetricFamily(
        "balancer_fallback",
        "Redirects sent to the origin because no CDN host of the pool was healthy.",
        labels=["region"],
    )
    for region, count in sorted({DEFAULT_REGION: 0, **figures.fallback}.items()):
        fallback.add_metric([region], count)
    yield fallback

    to_default = CounterMetricFamily(
        "balancer_region_fallback",
        "Redirects of a region's viewers served from the default pool because the region's "
        "pool had no healthy CDN host.",
        labels=["region"],
    )
    for region, count in sorted(figures.region_fallback.items()):
        to_default.add_metric([region], count)
    yield to_default

    rejected = CounterMetricFamily(
        "balancer_rejected",
        "Problem answers of the redirect path, by problem code.",
        labels=["code"],
    )
    for code, count in sorted({"rate-limited": 0, **figures.rejected}.items()):
        rejected.add_metric([code], count)
    yield rejected

    yield _histogram(
        "balancer_redirect_duration_seconds",
        "Time inside the service per redirect (one redirect per 10 ms tick of a worker is timed).",
        figures.buckets,
        figures.duration_sum,
        DURATION_BUCKETS,
    )
    yield _histogram(
        "balancer_event_loop_lag_seconds",
        "How late each 25 ms turn of a worker's event loop came: what a request arriving "
        "then waited, the host's scheduling included.",
        figures.loop_lag,
        figures.loop_lag_sum,
    )
    yield _histogram(
        "balancer_event_loop_busy_seconds",
        "CPU time a worker's event loop used between two 25 ms turns: no request waited "
        "longer than that for the worker's own work.",
        figures.loop_busy,
        figures.loop_busy_sum,
    )

    yield from steering_families(figures)

    errors = CounterMetricFamily(
        "balancer_backend_errors",
        "Failed PostgreSQL and Redis calls, by backend and error kind.",
        labels=["backend", "kind"],
    )
    for (backend, kind), count in sorted(figures.backend_errors.items()):
        errors.add_metric([backend, kind], count)
    yield errors

    yield CounterMetricFamily(
        "balancer_cdn_probe_round_failures",
        "CDN prober rounds that failed for an unexpected reason and published nothing (the "
        "traceback is logged as cdn_probe_round_failed).",
        value=figures.probe_round_failures,
    )

    yield CounterMetricFamily(
        "balancer_clients_gone",
        "Connections their client closed while requests on them were still unanswered "
        "(logged at debug as client_gone: a client going away is not an error).",
        value=figures.clients_gone,
    )

    yield _gauge(
        "balancer_config_version",
        "The newest configuration version served.",
        figures.config_version,
    )
    yield _gauge(
        "balancer_sequence_degraded",
        "1 while a worker counts on a local sequence because Redis is unreachable.",
        int(figures.sequence_degraded),
    )
    yield _by_label(
        GaugeMetricFamily,
        "balancer_cdn_up",
        "1 while every worker routes to the CDN host.",
        "host",
        {host: int(up) for host, up in figures.cdn_up.items()},
    )
    yield _by_label(
        GaugeMetricFamily,
        "balancer_cdn_effective_weight",
        "The weight the CDN host's rotations give it now: its configured weight (in the first "
        "pool listing it) times the share its load report and slow start leave; 0 while down "
        "or drained. The lowest over the workers.",
        "host",
        figures.cdn_weight,
    )
    yield _by_label(
        GaugeMetricFamily,
        "balancer_cdn_reported_utilization",
        "The utilization the CDN host last reported (load: utilization), 1 = fully used.",
        "host",
        figures.cdn_utilization,
    )
    if figures.origin_share is not None:
        yield _gauge(
            "balancer_configured_origin_share",
            "The origin's share of the global split now (origin_weight / both weights).",
            figures.origin_share,
        )
    yield _gauge("balancer_workers", "Worker processes whose figures are live.", figures.workers)
    yield _gauge(
        "balancer_rate_limit_clients",
        "Clients with a rate-limit bucket, summed over the workers.",
        figures.rate_limit_clients,
    )


def steering_families(figures: Figures) -> Iterator[Metric]:
    yield _by_label(
        CounterMetricFamily,
        "balancer_steering_requests",
        "Steering manifests answered, by the pathway the player said it was on "
        "(_HLS_pathway, _DASH_pathway; empty when absent or not a pathway of its pool).",
        "pathway",
        figures.steering_requests,
    )
    throughput = HistogramMetricFamily(
        "balancer_steering_throughput_bits_per_second",
        "Throughput players reported on steering reloads (_HLS_throughput, "
        "_DASH_throughput), by the pathway they were on.",
        labels=["pathway"],
    )
    for pathway, counts in sorted(figures.steering_throughput.items()):
        cumulative, buckets = 0, []
        for bound, count in zip((*THROUGHPUT_BUCKETS, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((_bound(bound), cumulative))
        throughput.add_metric(
            [pathway], buckets, sum_value=figures.steering_throughput_sum.get(pathway, 0.0)
        )
    yield throughput


def _by_label(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, float],
) -> Metric:
    """A family of one sample per value of `label`, in label order."""
    metric = family(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _histogram(
    name: str,
    documentation: str,
    counts: Sequence[int],
    total: float,
    bounds: Sequence[float] = LOOP_BUCKETS,
) -> HistogramMetricFamily:
    """A histogram of counts by `bounds` (+Inf last), made cumulative."""
    cumulative, buckets = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        buckets.append((_bound(bound), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


def process_families(pids: Iterable[int]) -> Iterator[Metric]:
    """The standard `process_*` metrics of each worker, labelled `worker="<pid>"`: summing
    CPU seconds or start times across processes would hide which worker grows or spins."""
    families: dict[str, Metric] = {}
    for pid in pids:
        collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
        for family in collector.collect():
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": str(pid)}, sample.value)
    yield from families.values()


def metrics_router(token: MetricsAuth | None) -> APIRouter:
    router = APIRouter(tags=["metrics"], route_class=DishkaRoute)
    dependencies = [Depends(token)] if token is not None else []

    @router.get(
        "/metrics",
        summary="Prometheus metrics of every worker of this instance",
        dependencies=dependencies,
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
            # Only while BALANCER_METRICS_TOKEN is set.
            **dict.fromkeys((401, 403), PROBLEM_RESPONSE),
        },
    )
    async def metrics(read: FromDishka[ReadInstanceFigures]) -> Response:
        """Prometheus text format covering every worker of this instance. Open unless
        `BALANCER_METRICS_TOKEN` is set; then `Authorization: Bearer <token>`."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(InstanceCollector(read))
        # Off the event loop: with the largest configuration (a gauge per CDN host, 8,192 of
        # them, from every worker's file) the text took 100-500 ms of the loop's CPU, a
        # stall of every viewer of the worker at each scrape (balancer_event_loop_busy_seconds).
        text = await off_loop(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return router


def stats_router(auth: Access) -> APIRouter:
    router = APIRouter(prefix="/stats", tags=["metrics"], route_class=DishkaRoute)
    errors: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 404, 503), PROBLEM_RESPONSE)

    @router.get(
        "",
        summary="Counts since the last reset, whole cluster",
        dependencies=[Depends(auth.reader)],
        responses=errors,
    )
    async def stats(get: FromDishka[GetStats]) -> StatsBody:
        """Counts since the last reset across every worker of every instance (flushed to
        Redis at most once a second, so up to a second behind). While Redis cannot be
        read, this instance's own counts since it started, with `scope: instance`."""
        report = await get()
        return StatsBody(
            scope=report.scope,
            since=datetime.fromtimestamp(report.since, UTC),
            total=report.total,
            by_target=report.by_target,
            by_server=report.by_server,
            by_server_error=report.by_server_error,
            by_cdn_host=report.by_cdn_host,
            by_region=report.by_region,
            rejected=report.rejected,
            rate_limited=report.rate_limited,
            configured_origin_share=report.configured_origin_share,
            achieved_origin_share=report.achieved_origin_share,
            requests_per_second=report.requests_per_second,
            note=report.note,
            steering={
                pathway: SteeringPathwayBody(
                    requests=one.requests,
                    throughput_reports=one.throughput_reports,
                    throughput_bps_mean=one.throughput_bps_mean,
                )
                for pathway, one in report.steering.items()
            },
        )

    @router.post(
        "/reset",
        summary="Start the counts again from zero",
        dependencies=[Depends(auth.operator)],
        status_code=204,
        responses=errors,
    )
    async def reset(reset: FromDishka[ResetStats]) -> Response:
        """Start the cluster's counts from zero now (503 while Redis is unreachable)."""
        await reset()
        return Response(status_code=204)

    return router
