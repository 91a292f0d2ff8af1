"""Job change events for SSE and ``?wait``: after a write commits, subscribers of the changed jobs get a
fresh snapshot. Every snapshot carries the job's ``version``, so a subscriber drops what it has already seen.

In one process the store calls the bus directly; in a gateway, PostgreSQL's notices of other processes' writes
feed the same ``notify`` method (``jobs.notify``), and ``resync`` sends every followed job afresh after the listener
reconnects. ``close`` ends every stream (the server is stopping): a follower gets :class:`Closing`, and the SSE
route tells the client to reconnect (to another gateway behind the load balancer).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from pocket3d.jobs.records import JobRecord
from pocket3d.jobs.snapshots import JobSnapshots
from pocket3d.jobs.store import Store

log = logging.getLogger(__name__)


class Closing(Exception):
    """The server is stopping; the stream should end with a hint to reconnect."""


_CLOSING = object()  # what a follower's queue gets when the bus closes


class EventBus:
    def __init__(self, store: Store, snapshots: JobSnapshots):
        self._snapshots = snapshots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[str, set[asyncio.Queue[JobRecord]]] = {}
        self._lock = threading.Lock()
        self.closing = False
        store.add_listener(self.notify)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, job_ids: set[str]) -> None:
        with self._lock:
            wanted = {j: list(self._subscribers[j]) for j in job_ids if j in self._subscribers}
        if not wanted or self._loop is None:
            return
        for job_id, queues in wanted.items():
            job = self._snapshots.get(job_id)
            if job is None:
                continue
            for q in queues:
                self._loop.call_soon_threadsafe(q.put_nowait, job)

    def resync(self) -> None:
        """Changes may have gone unheard: send every followed job as it is now (followers drop what they saw)."""
        with self._lock:
            followed = set(self._subscribers)
        self.notify(followed)

    def close(self) -> None:
        """End every stream now; streams opened after this end at once too. Safe in a signal handler (uvicorn's
        SIGTERM): that runs in the event loop's thread, perhaps while it holds the lock, so the streams are ended by
        the loop, not here."""
        self.closing = True
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._end_streams)
        except RuntimeError:  # the loop is closed: no stream is left to end
            pass

    def _end_streams(self) -> None:
        with self._lock:
            queues = [q for subs in self._subscribers.values() for q in subs]
        for q in queues:
            q.put_nowait(_CLOSING)

    async def follow(self, job_id: str, after_version: int = 0) -> AsyncIterator[JobRecord]:
        """Yield the job now (if newer than ``after_version``) and at every change, until a final state. Raises
        :class:`Closing` when the bus closes first."""
        queue: asyncio.Queue[JobRecord] = asyncio.Queue()
        with self._lock:
            self._subscribers.setdefault(job_id, set()).add(queue)
        try:
            # After subscribing: a close from now on reaches this queue (its streams are ended by this loop).
            if self.closing:
                raise Closing()
            # Subscribed before reading, so no change can fall between the snapshot and the first event.
            current = await asyncio.to_thread(self._snapshots.get, job_id)
            if current is None:
                return
            seen = after_version
            if current.version > seen:
                seen = current.version
                yield current
            if current.status.is_final:
                return
            while True:
                job = await queue.get()
                if job is _CLOSING:
                    raise Closing()
                if job.version <= seen:
                    continue
                seen = job.version
                yield job
                if job.status.is_final:
                    return
        finally:
            with self._lock:
                subs = self._subscribers.get(job_id)
                if subs is not None:
                    subs.discard(queue)
                    if not subs:
                        del self._subscribers[job_id]

    async def wait_final(self, job_id: str, timeout: float) -> JobRecord | None:
        """The job once final, or its latest state when ``timeout`` runs out first."""
        latest: JobRecord | None = None

        async def run() -> None:
            nonlocal latest
            async for job in self.follow(job_id):
                latest = job

        try:
            await asyncio.wait_for(run(), timeout)
        except (TimeoutError, Closing):  # closing: the caller answers with the state it has
            pass
        return latest
