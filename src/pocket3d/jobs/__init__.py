"""Jobs and stages: records, the durable store, and the state machine (``transitions``)."""

from typing import TYPE_CHECKING, Any

from pocket3d.jobs.records import (
    EXPORT_STAGE,
    ClaimedStage,
    FileRecord,
    IdempotencyKey,
    JobInput,
    JobRecord,
    JobStatus,
    NewFile,
    NewJob,
    NewStage,
    OutputRecord,
    StageRecord,
    StageStatus,
)

if TYPE_CHECKING:
    from pocket3d.jobs.store import Store, new_id


def __getattr__(name: str) -> Any:
    # The store (SQLAlchemy) loads on first use: what needs only the records (the API's schemas, and through them
    # the SDK, pocket3d.client) does not load a database layer.
    if name in ("Store", "new_id"):
        from pocket3d.jobs import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EXPORT_STAGE", "ClaimedStage", "FileRecord", "IdempotencyKey", "JobInput", "JobRecord", "JobStatus",
           "NewFile", "NewJob", "NewStage", "OutputRecord", "StageRecord", "StageStatus", "Store", "new_id"]
