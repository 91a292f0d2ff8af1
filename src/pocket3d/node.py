"""One pocket3d node: the store, artifacts, registry, event bus, scheduler, retention, webhook sender and
metrics, wired together.

``pocket3d serve`` builds one Node and hands it to the API. Tests build Nodes too, on temporary data dirs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa

from pocket3d.config import DEFAULT_MODELS_FILE, ConfigError, Settings
from pocket3d.errors import storage_failure
from pocket3d.jobs import schema as t
from pocket3d.jobs import transitions
from pocket3d.jobs.events import EventBus
from pocket3d.jobs.migrations import SchemaMismatch
from pocket3d.jobs.notify import ChangeListener
from pocket3d.jobs.records import JobStatus
from pocket3d.jobs.snapshots import JobSnapshots
from pocket3d.jobs.store import Store
from pocket3d.metrics import Metrics
from pocket3d.models.registry import Registry
from pocket3d.outbound.client import OutboundClient
from pocket3d.outbound.guard import AddressGuard, Resolver
from pocket3d.outbound.webhooks import WebhookSender
from pocket3d.scheduler.base import Scheduler
from pocket3d.scheduler.cluster import ClusterView, DatabaseClock, Membership, Peers, node_id
from pocket3d.scheduler.node import NodeScheduler
from pocket3d.storage import ArtifactStore, StorageUnavailable, open_store
from pocket3d.storage.locks import BlobLock

log = logging.getLogger(__name__)
SWEEP_LOCK = 0x70336401  # advisory lock key: one retention sweep at a time in a cluster


class DataDirLock:
    """One embedded node per data directory: a second would requeue the first one's running stages."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"data_dir {self.path.parent} is in use by another pocket3d process") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Retention:
    """Deletes blobs nobody references: deleted and expired uploads once no job holds them, inputs sent inline once
    their job ended, expired outputs, leftovers of a crash. A blob is referenced by an upload's row, an output's
    row, or an input of a job that is waiting or running. Writers hold a blob (``BlobLock.writing``) from before it
    is stored until its row has committed; a held blob is left for a later sweep."""

    def __init__(self, store: Store, artifacts: ArtifactStore, blob_lock: BlobLock):
        self.store, self.artifacts, self.blob_lock = store, artifacts, blob_lock

    def collect(self, candidates: Iterable[str]) -> int:
        ordered = sorted(set(candidates))
        deleted = 0
        for i in range(0, len(ordered), 500):
            chunk = ordered[i:i + 500]
            if self.store.is_sqlite:
                with self.blob_lock.deleting(None, chunk) as free, self.store.read() as conn:
                    deleted += self._delete_unreferenced(conn, free)
            else:  # the references are read, and the blobs deleted, in the transaction that holds their locks
                with self.store.write() as tx, self.blob_lock.deleting(tx.conn, chunk) as free:
                    deleted += self._delete_unreferenced(tx.conn, free)
        return deleted

    def _delete_unreferenced(self, conn: sa.Connection, shas: set[str]) -> int:
        if not shas:
            return 0
        ji, j = t.job_inputs.c, t.jobs.c
        chunk = sorted(shas)
        referenced = set(conn.execute(
            sa.select(ji.sha256).join(t.jobs, j.id == ji.job_id)
            .where(ji.sha256.in_(chunk), j.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))).scalars())
        referenced.update(conn.execute(sa.select(t.files.c.sha256).where(t.files.c.sha256.in_(chunk))).scalars())
        referenced.update(conn.execute(sa.select(t.outputs.c.sha256).where(t.outputs.c.sha256.in_(chunk))).scalars())
        return sum(self.artifacts.delete(sha) for sha in shas - referenced)

    def sweep(self, now: float) -> int:
        """Expire what is due, then delete every stored blob nothing references any more."""
        transitions.expire(self.store, now=now)
        return self.collect(self.artifacts.hashes())


class StorageHealth:
    """Whether the data directory's disk and the store take writes, for readiness.

    A write refused for lack of space (or any storage failure: ``errors.storage_failure``) marks it troubled;
    readiness then probes (a 4 KiB file in tmp, synced, and a one-row write to the store) until a probe passes.
    Less than ``min_free`` bytes free on the data directory's disk is a problem too, before anything fails."""

    def __init__(self, store: Store, tmp: Path, min_free: int):
        self.store, self.tmp, self.min_free = store, tmp, min_free
        self._trouble: str | None = None
        self._lock = threading.Lock()

    def failed(self, reason: str) -> None:
        with self._lock:
            if self._trouble is None:
                log.warning("storage unavailable: %s; /system/ready says not ready until a write succeeds", reason)
            self._trouble = reason

    def problem(self) -> str | None:
        try:
            free = shutil.disk_usage(self.tmp).free
        except OSError as e:
            return f"storage unavailable: the data directory cannot be read: {e.strerror}"
        if free < self.min_free:
            return (f"storage unavailable: {free >> 20} MB free on the data directory's disk "
                    f"(storage.min_free_space is {self.min_free >> 20} MB)")
        with self._lock:
            if self._trouble is None:
                return None
        failure = self._probe()
        with self._lock:
            if failure is None:
                log.info("storage takes writes again")
                self._trouble = None
                return None
            self._trouble = failure
        return f"storage unavailable: {failure}"

    def _probe(self) -> str | None:
        try:
            with tempfile.NamedTemporaryFile(dir=self.tmp, prefix=".probe-") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
            self.store.probe_write()
        except Exception as e:
            return storage_failure(e) or f"{type(e).__name__}: {e}"
        return None


class Role(StrEnum):
    """What a process runs: every part (``pocket3d serve``), or one side of a cluster."""

    EMBEDDED = "embedded"  # the API, the scheduler and the device workers, on SQLite or one PostgreSQL
    GATEWAY = "gateway"  # the API only (pocket3d serve --role gateway): no device, no model
    WORKER = "worker"  # one node's devices, scheduler and device workers, no public API (pocket3d worker)


class Node:
    """One process's parts. Embedded: everything; a gateway: the API's parts, a view of the cluster instead of a
    scheduler, and the change listener that feeds its SSE streams and snapshot cache; a worker: the scheduler and
    its device workers, and the listener that wakes it for new work and cancels."""

    def __init__(self, settings: Settings, registry: Registry | None = None, *, role: Role = Role.EMBEDDED,
                 resolver: Resolver | None = None):
        """``resolver``: how outbound requests resolve host names (tests stub it; default the system's)."""
        self.settings, self.role = settings, role
        if role is not Role.EMBEDDED:
            settings.check_cluster_role(role.value)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirLock(settings.data_dir)
        self.lock.acquire()
        try:
            self.store = Store(settings.db_url)
            try:
                if role is Role.EMBEDDED:
                    self.store.prepare_schema()  # a SQLite file is upgraded in place; PostgreSQL only checked
                else:
                    self.store.check_schema()
            except SchemaMismatch as e:
                raise ConfigError(str(e)) from None
            try:
                self.artifacts = open_store(settings.data_dir, settings.storage)
            except ImportError as e:
                raise ConfigError(str(e)) from None
            if registry is None:
                models_file: Path | None = settings.models_file
                if not models_file.is_file() and models_file == DEFAULT_MODELS_FILE:
                    log.warning("no %s here: only models from installed plugins are registered", models_file)
                    models_file = None
                registry = Registry.from_config(models_file)
            self.registry = registry
            self.blob_lock = BlobLock(None if self.store.is_sqlite else self.store.engine)
            self.release = transitions.ReleasePolicy(settings.storage.cleanup_after)
            if settings.storage.keep_inputs is not None:
                log.warning("storage.keep_inputs no longer has an effect: an upload is usable by any number of jobs "
                            "until its expires_at (storage.file_lifetime); remove the key")
            # The snapshot cache listens before the bus, so events and polls read the same fresh state. It is on
            # where this process hears of every change: alone on SQLite, or a gateway hearing PostgreSQL's notices.
            # A gateway's reads go to the store while its listener is not connected: it would not hear a change.
            self.snapshots = JobSnapshots(self.store, enabled=self.store.is_sqlite or role is Role.GATEWAY,
                                          hearing=role is not Role.GATEWAY)
            self.bus = EventBus(self.store, self.snapshots)
            self.retention = Retention(self.store, self.artifacts, self.blob_lock)
            self.store.add_release_listener(self.retention.collect)
            self.storage_health = StorageHealth(self.store, self.artifacts.tmp, int(settings.storage.min_free_space))
            self.metrics = Metrics(self.store)
            self.scheduler: Scheduler
            self.node_id = node_id(role.value)
            # A cluster's nodes judge each other's leases and heartbeats: all in the database's time
            self.clock = None if role is Role.EMBEDDED else DatabaseClock(self.store)
            if self.clock is not None:
                self.clock.sync()
            if role is Role.GATEWAY:
                self.scheduler = ClusterView(self.store, settings, registry, clock=self.clock)
            else:
                peers = Peers(self.store, settings, self.node_id, clock=self.clock) if role is Role.WORKER else None
                self.scheduler = NodeScheduler(settings=settings, store=self.store, artifacts=self.artifacts,
                                               registry=registry, blob_lock=self.blob_lock, release=self.release,
                                               on_storage_failure=self.storage_health.failed, observer=self.metrics,
                                               sole_node=role is Role.EMBEDDED, peers=peers, node=self.node_id,
                                               clock=self.clock or time.time)
                self.metrics.watch(self.scheduler)  # a gateway has no devices of its own to report
            self.guard = AddressGuard(settings.webhooks.allow_hosts, resolver)
            self.webhooks = WebhookSender(self.store, settings.webhooks, self.guard,
                                          on_attempt=self.metrics.webhook_attempt,
                                          on_outcome=self.metrics.webhook_outcome)
            # Image inputs given as URLs (inputs.allow_urls): a guard of their own, as their allowed hosts are.
            inputs = settings.inputs
            self.url_inputs = OutboundClient(
                AddressGuard(inputs.allow_hosts, resolver, schemes=tuple(inputs.url_schemes),
                             allow_setting="inputs.allow_hosts"),
                timeout=inputs.url_timeout, max_response_size=int(inputs.max_url_size), max_redirects=3)
            self.listener = self._listener()
            self.membership = None if role is Role.EMBEDDED else Membership(
                self.store, settings, node=self.node_id, role=role.value,
                state=self.scheduler.cluster_state if isinstance(self.scheduler, NodeScheduler) else dict,
                clock=self.clock)
        except BaseException:
            self.lock.release()
            raise
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def _listener(self) -> ChangeListener | None:
        """What this process must hear of other processes' writes (PostgreSQL's notices)."""
        if self.role is Role.GATEWAY:
            def jobs_changed(job_ids: set[str]) -> None:
                self.snapshots.changed(job_ids)
                self.bus.notify(job_ids)

            def resync() -> None:
                self.snapshots.forget_all()
                self.bus.resync()
                self.webhooks.wake()

            return ChangeListener(self.store, {"jobs": jobs_changed, "outbox": lambda _: self.webhooks.wake()},
                                  on_resync=[resync], on_lost=[self.snapshots.deaf])
        if self.role is Role.WORKER:
            scheduler = self.scheduler

            def cancelled(job_ids: set[str]) -> None:
                for job_id in job_ids:
                    scheduler.cancel(job_id)

            return ChangeListener(self.store, {"queue": lambda _: scheduler.wake(), "cancel": cancelled},
                                  on_resync=[scheduler.wake])
        return None  # embedded: every write is this process's own

    @property
    def sends_webhooks(self) -> bool:
        return self.role is not Role.WORKER

    def start(self) -> None:
        removed = self.artifacts.clear_tmp()
        if removed:
            log.warning("removed %d temporary file(s) left by a previous process", removed)
        if self.listener is not None:
            self.listener.start()
        self.scheduler.start()
        if self.membership is not None:
            self.membership.start()
        if self.sends_webhooks:
            # Embedded (SQLite under the data-dir lock), this is the only sender: what it had in flight is due now.
            self.webhooks.start(only_sender=self.store.is_sqlite)
        if self.settings.metrics.enabled and self.settings.metrics.port is not None:
            self.metrics.serve(self.settings.metrics.host, self.settings.metrics.port)
        if self.role is Role.WORKER:
            return  # workers leave the sweeps to the gateways (one of them at a time)
        try:
            self._sweep_once()
        except StorageUnavailable as e:  # an S3 store that is down: start anyway, not ready until it is back
            log.warning("retention sweep at start failed: %s", e)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="retention", daemon=True)
        self._sweeper.start()

    def drain(self, seconds: float) -> int:
        """Stop taking work and let what runs finish for up to ``seconds`` (a worker's SIGTERM); returns how many
        stages still ran then (``stop`` gives them back to the queue)."""
        if self.membership is not None:
            try:
                self.membership.drain()
            except Exception as e:  # the database is away: the drain goes on without telling the others
                log.warning("could not mark this node draining: %s", e)
        if isinstance(self.scheduler, NodeScheduler):
            return self.scheduler.drain(seconds)
        return 0

    def stop(self) -> None:
        self._stop.set()
        self.bus.close()
        self.scheduler.stop()
        if self.membership is not None:
            self.membership.stop()
        if self.listener is not None:
            self.listener.stop()
        self.webhooks.stop()
        self.metrics.stop_serving()
        self.url_inputs.close()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self.blob_lock.close()
        self.store.dispose()
        self.lock.release()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.scheduler.cleanup_interval):
            try:
                deleted = self._sweep_once()
                if deleted:
                    log.info("retention removed %d artifact(s)", deleted)
            except Exception as e:
                if (reason := storage_failure(e)) is not None:
                    self.storage_health.failed(reason)
                    log.warning("retention sweep failed: storage unavailable: %s", reason)
                else:
                    log.exception("retention sweep failed")

    def _sweep_once(self) -> int:
        """One sweep; in a cluster, by one gateway at a time (the others find the lock taken and skip): listing a
        large bucket is the sweep's cost, and once is enough."""
        if self.store.is_sqlite:
            return self.retention.sweep(time.time())
        with self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": SWEEP_LOCK}).scalar():
                return 0
            try:
                return self.retention.sweep(time.time())
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": SWEEP_LOCK})
