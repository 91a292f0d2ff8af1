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
from pathlib import Path

import sqlalchemy as sa

from pocket3d.config import DEFAULT_MODELS_FILE, ConfigError, Settings
from pocket3d.errors import storage_failure
from pocket3d.jobs import schema as t
from pocket3d.jobs import transitions
from pocket3d.jobs.events import EventBus
from pocket3d.jobs.migrations import SchemaMismatch
from pocket3d.jobs.records import JobStatus
from pocket3d.jobs.snapshots import JobSnapshots
from pocket3d.jobs.store import Store
from pocket3d.metrics import Metrics
from pocket3d.models.registry import Registry
from pocket3d.outbound.client import OutboundClient
from pocket3d.outbound.guard import AddressGuard, Resolver
from pocket3d.outbound.webhooks import WebhookSender
from pocket3d.scheduler.node import NodeScheduler
from pocket3d.storage import ArtifactStore, StorageUnavailable, open_store

log = logging.getLogger(__name__)


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
    row, or an input of a job that is waiting or running."""

    def __init__(self, store: Store, artifacts: ArtifactStore, blob_lock: threading.RLock):
        self.store, self.artifacts, self.blob_lock = store, artifacts, blob_lock

    def collect(self, candidates: Iterable[str]) -> int:
        candidates = set(candidates)
        if not candidates:
            return 0
        deleted = 0
        # Under the lock that also covers "put blob, then insert its row": no blob goes while a row is coming.
        with self.blob_lock:
            referenced: set[str] = set()
            ordered = sorted(candidates)
            with self.store.read() as conn:
                ji = t.job_inputs.c
                referenced.update(conn.execute(
                    sa.select(ji.sha256).join(t.jobs, t.jobs.c.id == ji.job_id)
                    .where(t.jobs.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))).scalars())
                for i in range(0, len(ordered), 500):
                    chunk = ordered[i:i + 500]
                    referenced.update(conn.execute(sa.select(t.files.c.sha256).where(t.files.c.sha256.in_(chunk)))
                                      .scalars())
                    referenced.update(conn.execute(sa.select(t.outputs.c.sha256)
                                                   .where(t.outputs.c.sha256.in_(chunk))).scalars())
            for sha in candidates - referenced:
                deleted += self.artifacts.delete(sha)
        return deleted

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


class Node:
    def __init__(self, settings: Settings, registry: Registry | None = None, *, resolver: Resolver | None = None):
        """``resolver``: how outbound requests resolve host names (tests stub it; default the system's)."""
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirLock(settings.data_dir)
        self.lock.acquire()
        try:
            self.store = Store(settings.db_url)
            try:
                self.store.prepare_schema()
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
            self.blob_lock = threading.RLock()
            self.release = transitions.ReleasePolicy(settings.storage.cleanup_after)
            if settings.storage.keep_inputs is not None:
                log.warning("storage.keep_inputs no longer has an effect: an upload is usable by any number of jobs "
                            "until its expires_at (storage.file_lifetime); remove the key")
            # The snapshot cache listens before the bus, so events and polls read the same fresh state.
            self.snapshots = JobSnapshots(self.store, enabled=self.store.is_sqlite)
            self.bus = EventBus(self.store, self.snapshots)
            self.retention = Retention(self.store, self.artifacts, self.blob_lock)
            self.store.add_release_listener(self.retention.collect)
            self.storage_health = StorageHealth(self.store, self.artifacts.tmp, int(settings.storage.min_free_space))
            self.metrics = Metrics(self.store)
            self.scheduler = NodeScheduler(settings=settings, store=self.store, artifacts=self.artifacts,
                                           registry=registry, blob_lock=self.blob_lock, release=self.release,
                                           on_storage_failure=self.storage_health.failed, observer=self.metrics)
            self.metrics.watch(self.scheduler)
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
        except BaseException:
            self.lock.release()
            raise
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        removed = self.artifacts.clear_tmp()
        if removed:
            log.warning("removed %d temporary file(s) left by a previous process", removed)
        self.scheduler.start()
        # Embedded (SQLite under the data-dir lock), this is the only sender: what it had in flight is due now.
        self.webhooks.start(only_sender=self.store.is_sqlite)
        if self.settings.metrics.enabled and self.settings.metrics.port is not None:
            self.metrics.serve(self.settings.metrics.host, self.settings.metrics.port)
        try:
            self.retention.sweep(time.time())
        except StorageUnavailable as e:  # an S3 store that is down: start anyway, not ready until it is back
            log.warning("retention sweep at start failed: %s", e)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="retention", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.stop()
        self.webhooks.stop()
        self.metrics.stop_serving()
        self.url_inputs.close()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self.store.dispose()
        self.lock.release()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.scheduler.cleanup_interval):
            try:
                deleted = self.retention.sweep(time.time())
                if deleted:
                    log.info("retention removed %d artifact(s)", deleted)
            except Exception as e:
                if (reason := storage_failure(e)) is not None:
                    self.storage_health.failed(reason)
                    log.warning("retention sweep failed: storage unavailable: %s", reason)
                else:
                    log.exception("retention sweep failed")
