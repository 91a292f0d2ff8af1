"""The latest state of recently read jobs, kept in memory and refreshed by the store's after-commit listener.

Status polling is the API's hottest path; answering it from memory makes ``GET /jobs/{id}`` cost about what a
bare endpoint costs (bench/api_overhead.py). It is only correct while every write to the jobs passes through
this process's :class:`Store`, which holds for the embedded node (SQLite under the data-directory lock). With a
shared database it stays off until LISTEN/NOTIFY feeds the same listener.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from pocket3d.jobs.records import JobRecord
from pocket3d.jobs.store import Store


class JobSnapshots:
    def __init__(self, store: Store, *, enabled: bool, capacity: int = 4096):
        self._store = store
        self.enabled = enabled
        self._capacity = capacity
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()
        self._changes = 0  # raised by every committed change; guards inserts against racing writes
        self._lock = threading.Lock()
        if enabled:
            store.add_listener(self._changed)

    def get(self, job_id: str) -> JobRecord | None:
        if not self.enabled:
            return self._store.get_job(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs.move_to_end(job_id)
                return job
            seen = self._changes
        job = self._store.get_job(job_id)
        if job is not None:
            with self._lock:
                # A change committed while we read may not be in what we read: then do not keep it.
                if self._changes == seen:
                    self._put(job)
        return job

    def _changed(self, job_ids: set[str]) -> None:
        with self._lock:
            self._changes += 1
            cached = [j for j in job_ids if j in self._jobs]
        for job_id in cached:
            fresh = self._store.get_job(job_id)
            with self._lock:
                current = self._jobs.get(job_id)
                if fresh is None:
                    self._jobs.pop(job_id, None)
                elif current is None or fresh.version >= current.version:
                    self._put(fresh)

    def _put(self, job: JobRecord) -> None:
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id)
        while len(self._jobs) > self._capacity:
            self._jobs.popitem(last=False)
