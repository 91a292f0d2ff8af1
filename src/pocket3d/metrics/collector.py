"""Prometheus metrics of one node, in one registry, collected in the server process.

The device workers are separate processes, but they count nothing themselves: all they do reaches the scheduler
in this process as a message (loaded, unloaded, a stage's result, an exit), and the scheduler reports it here
through :class:`SchedulerObserver`. So one in-process registry sees every worker, without prometheus_client's
multiprocess mode (files in a shared directory, per-pid clean-up, no custom collectors). Jobs are counted from
the store's after-commit events; what is a state rather than an event (the queue, device memory, resident
models, pending deliveries) is read when Prometheus scrapes, from the store and the scheduler's public views.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from pocket3d.jobs import outbox
from pocket3d.jobs.records import DeliveryStatus, JobEvent
from pocket3d.jobs.store import Store
from pocket3d.models.spec import Feature
from pocket3d.scheduler.base import Scheduler, SchedulerObserver
from pocket3d.scheduler.devices import read as read_device

log = logging.getLogger(__name__)

REQUESTED_FEATURES = (Feature.MESH_GENERATION, Feature.TEXTURE_GENERATION, Feature.SEGMENTATION,
                      Feature.AUTO_RIGGING)

MB = 1024 * 1024
EXPORT_MODEL = "export"  # the model label of the export stage, which pocket3d runs itself
SERVER_DEVICE = "server"  # ...in the server process
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics(SchedulerObserver):
    def __init__(self, store: Store):
        disable_created_metrics()  # no *_created series beside every counter: Prometheus reads resets without them
        self.store = store
        self.scheduler: Scheduler | None = None
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.jobs_submitted = Counter("pocket3d_jobs_submitted", "Jobs accepted", ["feature"], registry=r)
        self.jobs_finished = Counter("pocket3d_jobs_finished", "Jobs that reached a final state; error_code is "
                                     "empty unless the job failed", ["feature", "status", "error_code"], registry=r)
        self.stage_duration = Histogram("pocket3d_stage_duration_seconds", "Run time of stages that succeeded "
                                        "(model export and device server: the export stage)", ["model", "device"],
                                        buckets=STAGE_BUCKETS, registry=r)
        self.model_loads = Counter("pocket3d_model_loads", "Models loaded into a device worker", ["model", "device"],
                                   registry=r)
        self.model_unloads = Counter("pocket3d_model_unloads", "Models unloaded, by reason (idle, evicted, "
                                     "out_of_memory, other)", ["model", "device", "reason"], registry=r)
        self.model_load_seconds = Histogram("pocket3d_model_load_seconds", "Time to load a model",
                                            ["model", "device"], buckets=LOAD_BUCKETS, registry=r)
        self.worker_restarts = Counter("pocket3d_worker_restarts", "Device worker processes replaced, by cause "
                                       "(crashed, killed, memory_retained)", ["device", "cause"], registry=r)
        self.http_duration = Histogram("pocket3d_http_request_duration_seconds", "HTTP requests by route template "
                                       "(unmatched: no route) and status", ["method", "route", "status"],
                                       buckets=HTTP_BUCKETS, registry=r)
        self.sse_streams = Gauge("pocket3d_sse_streams_open", "Server-Sent Event streams open now", registry=r)
        self.webhook_deliveries = Counter("pocket3d_webhook_deliveries", "Webhook deliveries that ended, by "
                                          "outcome (succeeded, failed)", ["outcome"], registry=r)
        self.webhook_attempts = Counter("pocket3d_webhook_attempts", "Webhook delivery attempts, by outcome "
                                        "(succeeded, http_error, timeout, connection, forbidden, unresolvable, "
                                        "invalid, redirects)", ["outcome"], registry=r)
        r.register(_StateCollector(self))
        store.add_event_listener(self.on_job_events)

    def watch(self, scheduler: Scheduler) -> None:
        """The scheduler whose devices and resident models the scrape reads."""
        self.scheduler = scheduler

    def serve(self, host: str, port: int) -> None:
        """Also answer scrapes on ``host:port`` (metrics.port), without auth; for a scraper inside the network."""
        self._server, self._server_thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def stop_serving(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- events ---------------------------------------------------------------------------------------------

    def on_job_events(self, events: list[JobEvent]) -> None:
        for e in events:
            if e.kind == "submitted":
                self.jobs_submitted.labels(e.feature).inc()
            elif e.kind == "finished":
                self.jobs_finished.labels(e.feature, e.status.value, e.error_code or "").inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_duration.labels(method, route, str(status)).observe(seconds)

    def webhook_attempt(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome).inc()

    def webhook_outcome(self, outcome: str) -> None:
        self.webhook_deliveries.labels(outcome).inc()

    # -- SchedulerObserver ----------------------------------------------------------------------------------

    def stage_finished(self, model_id: str | None, device_id: str | None, seconds: float) -> None:
        self.stage_duration.labels(model_id or EXPORT_MODEL, device_id or SERVER_DEVICE).observe(seconds)

    def model_loaded(self, model_id: str, device_id: str, seconds: float) -> None:
        self.model_loads.labels(model_id, device_id).inc()
        self.model_load_seconds.labels(model_id, device_id).observe(seconds)

    def model_unloaded(self, model_id: str, device_id: str, reason: str) -> None:
        self.model_unloads.labels(model_id, device_id, reason).inc()

    def worker_restarted(self, device_id: str, cause: str) -> None:
        self.worker_restarts.labels(device_id, cause).inc()


class _StateCollector:
    """Gauges read at scrape time: what is, rather than what happened."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        store = self.metrics.store
        depth = GaugeMetricFamily("pocket3d_queue_depth", "Stages waiting for a device, by their job's feature and "
                                  "priority", labels=["feature", "priority"])
        pending = GaugeMetricFamily("pocket3d_webhook_deliveries_pending", "Webhook deliveries not yet delivered "
                                    "nor given up (waiting for an attempt, or being sent)")
        try:
            waiting = {(feature, str(priority)): n for feature, priority, n in store.queue_depth()}
            # Every feature at the default priority is there at 0 too: an alert on the queue reads 0 from an
            # empty queue, not "no data".
            for feature in REQUESTED_FEATURES:
                waiting.setdefault((feature.value, "0"), 0)
            for (feature, priority), n in sorted(waiting.items()):
                depth.add_metric([feature, priority], n)
            counts = outbox.count_by_status(store)
            pending.add_metric([], counts.get(DeliveryStatus.PENDING, 0) + counts.get(DeliveryStatus.SENDING, 0))
        except Exception:  # a scrape must not fail because the store is down; /system/ready says that
            log.exception("reading the store for metrics failed")
        yield depth
        yield pending
        scheduler = self.metrics.scheduler
        if scheduler is None:
            return
        names = {"used": "in use by every process (a virtual device: by pocket3d's models)",
                 "scheduled": "accounted by the scheduler to the models resident there",
                 "budget": "that the scheduler may fill", "total": "of the device"}
        memory = {k: GaugeMetricFamily(f"pocket3d_device_memory_{k}_bytes", f"Device memory {v}", labels=["device"])
                  for k, v in names.items()}
        resident = GaugeMetricFamily("pocket3d_model_resident", "1 for each model loaded on a device",
                                     labels=["model", "device"])
        for state in scheduler.devices():
            d = state.device
            reading = read_device(d)
            used = state.memory_used if d.virtual else reading.memory_used
            for key, mb in (("used", used), ("scheduled", state.memory_used), ("budget", state.budget),
                            ("total", reading.memory_total)):
                memory[key].add_metric([d.id], float(mb) * MB)
            for model_id in state.resident_models:
                resident.add_metric([model_id, d.id], 1)
        yield from memory.values()
        yield resident
