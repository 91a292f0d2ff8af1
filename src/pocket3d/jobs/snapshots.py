"""The latest state of recently read jobs, kept in memory and refreshed when they change.

Status polling is the API's hottest path; answering it from memory makes ``GET /jobs/{id}`` cost about what a
bare endpoint costs (bench/api_overhead.py). It is correct while this process hears of every change to the jobs:
the embedded node (SQLite under the data-directory lock) hears its own writes from the store's after-commit
listener; a gateway hears the other processes' writes too, from PostgreSQL (``jobs.notify``), and forgets
everything when its listener loses its connection, reading through until it listens again (notices sent
meanwhile are lost). A gateway's cache may lag a write
made elsewhere by the time its notice takes to arrive (milliseconds).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from pocket3d.jobs.records import JobRecord
from pocket3d.jobs.store import Store

CHANGES_KEPT = 65536  # jobs whose last change is remembered, to refuse a read that a change overtook


class JobSnapshots:
    def __init__(self, store: Store, *, enabled: bool, capacity: int = 4096, hearing: bool = True):
        """``hearing``: whether every change is heard from the start (a gateway's is not until its listener
        connects)."""
        self._store = store
        self.enabled = enabled
        self._hearing = hearing  # False: a change made elsewhere may go unheard; read through and keep nothing
        self._capacity = capacity
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()
        # A sequence number per change heard, and the last one per job: a read that began before a change to its
        # job was heard may hold the state before that change, and is then not kept.
        self._sequence = 0
        self._changed_at: OrderedDict[str, int] = OrderedDict()
        self._forgotten_before = 0  # changes older than this are no longer remembered per job
        self._lock = threading.Lock()
        if enabled:
            store.add_listener(self.changed)

    def get(self, job_id: str) -> JobRecord | None:
        if not self.enabled:
            return self._store.get_job(job_id)
        with self._lock:
            if not self._hearing:
                return self._store.get_job(job_id)
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs.move_to_end(job_id)
                return job
            began = self._sequence
        job = self._store.get_job(job_id)
        if job is not None:
            with self._lock:
                if began >= self._forgotten_before and self._changed_at.get(job_id, -1) <= began:
                    self._put(job)
        return job

    def changed(self, job_ids: Iterable[str]) -> None:
        """These jobs changed (a write of this process committed, or another process's notice arrived)."""
        with self._lock:
            self._sequence += 1
            cached = []
            for job_id in job_ids:
                self._changed_at[job_id] = self._sequence
                self._changed_at.move_to_end(job_id)
                if job_id in self._jobs:
                    cached.append(job_id)
            while len(self._changed_at) > CHANGES_KEPT:
                _, seq = self._changed_at.popitem(last=False)
                self._forgotten_before = max(self._forgotten_before, seq)
        for job_id in cached:
            fresh = self._store.get_job(job_id)
            with self._lock:
                current = self._jobs.get(job_id)
                if fresh is None:
                    self._jobs.pop(job_id, None)
                elif current is None or fresh.version >= current.version:
                    self._put(fresh)

    def deaf(self) -> None:
        """Changes made elsewhere go unheard from now (the listener lost its connection): keep nothing, and read
        every job from the store until :meth:`forget_all`."""
        self.forget_all(hearing=False)

    def forget_all(self, hearing: bool = True) -> None:
        """Changes may have gone unheard (the listener reconnected): read everything afresh."""
        with self._lock:
            self._hearing = hearing
            self._sequence += 1
            self._forgotten_before = self._sequence  # a read begun before this may have missed a change
            self._jobs.clear()
            self._changed_at.clear()

    def _put(self, job: JobRecord) -> None:
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id)
        while len(self._jobs) > self._capacity:
            self._jobs.popitem(last=False)
