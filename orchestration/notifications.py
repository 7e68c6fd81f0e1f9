"""Run failure notifications.

``run_failure_notifier`` is a run-failure sensor over every job of this code location. For each failed run it
appends one JSON line to ``<data root>/notifications/run_failures.jsonl``::

    {"time": ..., "job": ..., "run_id": ..., "failed_steps": [...], "error": ..., "message": ...}

and logs the same one-line message at ERROR level in the sensor's Dagster log (Automation -> sensor ->
tick logs in the UI). ``message`` reads e.g. ``run 1a2b... of job 'daily_retraining' failed at step
'semantic_id_codebook': ValueError: ...``. A chat or e-mail hook can tail this file (or replace
:func:`write_notification`) without touching the pipeline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from .resources import ArtifactStoreResource
from .settings import resolve_path

NOTIFICATIONS_FILE = "run_failures.jsonl"


def notifications_path(root: str | Path) -> Path:
    return resolve_path(root) / "notifications" / NOTIFICATIONS_FILE


def _error_text(error) -> str:
    """``Class: message`` of the innermost user error (Dagster wraps it in step-execution errors)."""
    if error is None:
        return "unknown error"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()  # already "Class: text" for exceptions
    return message if not error.cls_name or message.startswith(error.cls_name) else f"{error.cls_name}: {message}"


def failure_record(context: RunFailureSensorContext) -> dict:
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    failed_steps = [event.step_key for event in step_failures]
    if step_failures:
        error = _error_text(step_failures[0].step_failure_data.error)
    else:  # the run failed outside a step (e.g. run worker crash, bad config)
        error = context.failure_event.message or "run failed before any step"
    where = f" at step {failed_steps[0]!r}" if failed_steps else ""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "job": run.job_name,
        "run_id": run.run_id,
        "failed_steps": failed_steps,
        "error": error,
        "tags": {k: v for k, v in run.tags.items() if k.startswith(("oxyrec/", "dagster/partition", "dagster/backfill"))},
        "message": f"run {run.run_id} of job {run.job_name!r} failed{where}: {error}",
    }


def write_notification(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # one short line per failure: appends are atomic enough on a local volume
        handle.write(json.dumps(record, sort_keys=True) + "\n")


@run_failure_sensor(
    name="run_failure_notifier",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Writes job, run id, failed step and error of every failed run to <data>/notifications/run_failures.jsonl.",
)
def run_failure_notifier(context: RunFailureSensorContext, artifacts: ArtifactStoreResource):
    record = failure_record(context)
    path = notifications_path(artifacts.root)
    write_notification(path, record)
    context.log.error(record["message"])
