"""Jobs and stages: records, the durable store, and the state machine (``transitions``)."""

from pocket3d.jobs.records import (
    EXPORT_STAGE,
    ClaimedStage,
    FileRecord,
    IdempotencyKey,
    JobRecord,
    JobStatus,
    NewFile,
    NewJob,
    NewStage,
    OutputRecord,
    StageRecord,
    StageStatus,
)
from pocket3d.jobs.store import Store, new_id

__all__ = ["EXPORT_STAGE", "ClaimedStage", "FileRecord", "IdempotencyKey", "JobRecord", "JobStatus", "NewFile",
           "NewJob", "NewStage", "OutputRecord", "StageRecord", "StageStatus", "Store", "new_id"]
