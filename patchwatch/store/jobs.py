"""Recording job runs: every scheduled or manual job leaves a row with its outcome."""

from __future__ import annotations

from patchwatch.store.models import JobRun


def start_job_run(job: str, now: float) -> JobRun:
    """Insert a running job row and return it."""
    return JobRun.create(job=job, started_at=now)


def finish_job_run(run: JobRun, now: float, outcome: str, detail: str = "") -> None:
    """Mark a job run finished with ``outcome`` (success or failure)."""
    run.finished_at = now
    run.duration_seconds = max(0.0, now - run.started_at)
    run.outcome = outcome
    run.detail = detail[:4000]
    run.save()


def prune_job_runs(older_than: float) -> int:
    """Delete finished job runs started before ``older_than``; return how many."""
    return (
        JobRun.delete()
        .where((JobRun.started_at < older_than) & (JobRun.outcome != "running"))
        .execute()
    )
