"""Change notices between the processes of a cluster: PostgreSQL's LISTEN/NOTIFY.

A write transaction that changed something others must hear of sends a notice on one of four channels, in the
transaction, so it is delivered only if the write commits (:func:`announce`). A notice is small: who wrote it and
which ids changed; the reader fetches the rows it cares about. :class:`ChangeListener` holds one connection that
listens, coalesces what arrives, and calls the process's handlers from a thread of its own. A notice sent while the
connection was down is lost, so after every (re)connect it calls the resync handlers, which read the state afresh.

channel            payload (after the writer's origin)   heard by
jobs               job ids whose row changed             gateways: SSE streams, the snapshot cache
queue              models of stages queued ("-": export)  workers: look for work now
cancel             running jobs asked to stop             workers: stop the stage
outbox             (nothing)                              webhook senders
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from pocket3d.jobs.store import Store, WriteTx

log = logging.getLogger(__name__)

PREFIX = "pocket3d_"
CHANNELS = ("jobs", "queue", "cancel", "outbox")
MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes a notice
EXPORT = "-"  # the export stage's model in a queue notice
COALESCE_SECONDS = 0.02  # notices arriving this close together are handled as one batch
RECONNECT_MAX = 10.0  # seconds between attempts to listen again, at most


def announce(conn: Connection, origin: str, tx: WriteTx) -> None:
    """Send the notices of a write transaction, before it commits (one statement, or none)."""
    items = {"jobs": sorted(tx.changed_jobs), "queue": sorted(EXPORT if m is None else m for m in tx.queued),
             "cancel": sorted(tx.cancelled), "outbox": [""] if tx.outbox else []}
    payloads = [(PREFIX + channel, payload) for channel, ids in items.items() for payload in _payloads(origin, ids)]
    if not payloads:
        return
    calls = ", ".join(f"pg_notify(:c{i}, :p{i})" for i in range(len(payloads)))
    params = {k: v for i, (channel, payload) in enumerate(payloads) for k, v in ((f"c{i}", channel), (f"p{i}", payload))}
    conn.execute(sa.text(f"SELECT {calls}"), params)


def _payloads(origin: str, ids: list[str]) -> Iterable[str]:
    if not ids:
        return
    batch: list[str] = []
    size = len(origin)
    for item in ids:
        if batch and size + len(item) + 1 > MAX_PAYLOAD:
            yield "\n".join([origin, *batch])
            batch, size = [], len(origin)
        batch.append(item)
        size += len(item) + 1
    yield "\n".join([origin, *batch])


Handler = Callable[[set[str]], None]


class ChangeListener:
    """Listens on the channels it has handlers for; calls ``handlers[channel](ids)`` with the ids of every notice
    other processes sent (coalesced), and each of ``on_resync`` after every connect, since notices sent while it was
    not listening are lost; each of ``on_lost`` as soon as it finds its connection gone (from its own thread)."""

    def __init__(self, store: Store, handlers: dict[str, Handler], on_resync: Iterable[Callable[[], None]] = (),
                 on_lost: Iterable[Callable[[], None]] = ()):
        unknown = set(handlers) - set(CHANNELS)
        if unknown:
            raise ValueError(f"unknown channels {sorted(unknown)}")
        self.store = store
        self.handlers = handlers
        self.on_resync = list(on_resync)
        self.on_lost = list(on_lost)
        self.connected = threading.Event()
        self._pending: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conn: Any = None

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._listen, name="listen", daemon=True),
                         threading.Thread(target=self._handle, name="notices", daemon=True)]
        for th in self._threads:
            th.start()

    def stop(self) -> None:
        self._stop.set()
        self._arrived.set()
        for th in self._threads:
            th.join(5)

    # -- the connection -------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        # keepalives: a connection the network dropped silently is noticed in under a minute
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True, connect_timeout=10,
                               keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        try:
            for channel in self.handlers:
                conn.execute(f"LISTEN {PREFIX}{channel}")
        except BaseException:
            conn.close()  # else every failed attempt of the reconnect loop keeps a connection open
            raise
        return conn

    def _listen(self) -> None:
        delay, failed_since = 0.5, None
        while not self._stop.is_set():
            try:
                self._conn = conn = self._connect()
            except Exception as e:
                if failed_since is None:
                    failed_since = time.monotonic()
                    log.warning("listening for changes failed (%s); retrying with backoff", _short(e))
                self._stop.wait(delay)
                delay = min(RECONNECT_MAX, delay * 2)
                continue
            if failed_since is not None:
                log.info("listening for changes again after %.1f s", time.monotonic() - failed_since)
            delay, failed_since = 0.5, None
            self.connected.set()
            self._queue_resync()
            try:
                while not self._stop.is_set():
                    for n in conn.notifies(timeout=1.0):
                        self._received(n.channel.removeprefix(PREFIX), n.payload)
            except Exception as e:
                if not self._stop.is_set():
                    failed_since = time.monotonic()
                    log.warning("the change listener lost its connection (%s); reconnecting", _short(e))
            finally:
                self.connected.clear()
                for lost in self.on_lost:
                    self._call(lost)
                try:
                    conn.close()
                except Exception:  # noqa: S110 - closing a broken connection may fail too; it is gone either way
                    pass

    def _received(self, channel: str, payload: str) -> None:
        origin, _, body = payload.partition("\n")
        if origin == self.store.origin:
            return  # this process's own write: its listeners heard it after the commit
        with self._lock:
            self._pending.setdefault(channel, set()).update(body.split("\n") if body else ())
        self._arrived.set()

    def _queue_resync(self) -> None:
        with self._lock:
            self._pending.setdefault("", set())  # "" marks a resync
        self._arrived.set()

    # -- the handlers ---------------------------------------------------------------------------------------

    def _handle(self) -> None:
        while not self._stop.is_set():
            self._arrived.wait()
            if self._stop.is_set():
                return
            self._stop.wait(COALESCE_SECONDS)  # what arrives meanwhile joins this batch
            with self._lock:
                pending, self._pending = self._pending, {}
                self._arrived.clear()
            if "" in pending:
                for resync in self.on_resync:
                    self._call(resync)
            for channel, ids in pending.items():
                if channel in self.handlers:
                    self._call(self.handlers[channel], ids)

    @staticmethod
    def _call(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a handler that fails must not stop the notices of the others
            log.exception("handling change notices failed")


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
