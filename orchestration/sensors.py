"""Sensors: new raw data and the near-line path of fast-slow thinking.

``new_raw_file_sensor`` watches the raw landing directory (the file source's ``data.files_dir``, where the
warehouse export lands) for new or changed ``*.parquet`` / ``*.csv`` files and requests one ``ingest`` run over
every scenario partition per tick that saw any; the cursor (name -> [mtime_ns, size] of every file already
handled) makes each new file trigger exactly one run, and a rewritten file (new mtime or size) one more.

``high_value_action_sensor`` watches the event landing directory (``<data root>/events/incoming``, where the
application or a stream consumer drops JSON-lines micro-batches of interactions). When files with cart/order
actions inside the incremental window appear, it requests an ``instruction_updates`` run for exactly those
users; the cursor (the newest file already seen) makes each file count once.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from dagster import RunRequest, SensorEvaluationContext, SkipReason, define_asset_job, sensor

from .jobs import all_scenarios_tags, ingest_job
from .partitions import SCENARIOS
from .resources import DataSourceResource
from .settings import current_settings, resolve_path

RAW_SUFFIXES = (".parquet", ".csv")

instruction_updates_job = define_asset_job(
    "instruction_updates_job",
    selection=["instruction_updates"],
    description="Near-line: regenerate and push the instructions of users with fresh high-value actions.",
)


def landing_dir() -> Path:
    return current_settings().data_root / "events" / "incoming"


def high_value_users(paths: list[Path], actions: list[str], since: int) -> list[str]:
    users: set[str] = set()
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("action") in actions and int(event.get("timestamp", 0)) >= since:
                users.add(str(event["user_id"]))
    return sorted(users)


def evaluate_landing(directory: Path, cursor: str | None, actions: list[str], window_s: int, now: float):
    """(run request or None, new cursor). Files are ordered by (mtime_ns, name); the cursor is the last one."""
    seen = tuple(json.loads(cursor)) if cursor else (0, "")
    files = sorted(
        ((p.stat().st_mtime_ns, p.name), p) for p in directory.glob("*.jsonl") if p.is_file()
    ) if directory.is_dir() else []
    new = [(key, p) for key, p in files if key > seen]
    if not new:
        return None, cursor
    paths = [p for _, p in new]
    users = high_value_users(paths, actions, since=int(now) - window_s)
    next_cursor = json.dumps(list(new[-1][0]))
    if not users:
        return None, next_cursor
    request = RunRequest(
        run_key=f"instructions-{new[-1][0][0]}-{new[-1][0][1]}",
        run_config={
            "ops": {"instruction_updates": {"config": {"user_ids": users, "event_files": [str(p) for p in paths]}}}
        },
        tags={"oxyrec/trigger": "high_value_action", "oxyrec/users": str(len(users))},
    )
    return request, next_cursor


@sensor(job=instruction_updates_job, minimum_interval_seconds=30, description=__doc__)
def high_value_action_sensor(context: SensorEvaluationContext):
    features = current_settings().features
    request, cursor = evaluate_landing(
        landing_dir(), context.cursor, features.high_value_actions, features.incremental_window_minutes * 60, time.time()
    )
    if cursor != context.cursor:
        context.update_cursor(cursor)
    return request or SkipReason("no new cart/order actions in the landing directory")


def raw_landing_dir(data_source: DataSourceResource) -> Path | None:
    """The directory ``ingest`` reads raw files from, or None for the synthetic world (nothing lands)."""
    if data_source.source != "files" or not data_source.files_dir:
        return None
    return resolve_path(data_source.files_dir)


def scan_raw_files(directory: Path) -> dict[str, list[int]]:
    """name -> [mtime_ns, size] of the raw tables in ``directory`` (temporary/hidden files are ignored:
    an export should be written under a dot-name and renamed into place)."""
    if not directory.is_dir():
        return {}
    found = {}
    for path in directory.iterdir():
        if path.is_file() and path.suffix in RAW_SUFFIXES and not path.name.startswith("."):
            stat = path.stat()
            found[path.name] = [stat.st_mtime_ns, stat.st_size]
    return found


def evaluate_raw_landing(directory: Path, cursor: str | None, scenarios: list[str] = SCENARIOS):
    """(run request or None, new cursor): one ``ingest`` run for the files that are new or changed since
    the cursor. The run key is derived from those files' (name, mtime, size), so a re-evaluation of the
    same state can never launch a second run."""
    seen: dict[str, list[int]] = json.loads(cursor) if cursor else {}
    current = scan_raw_files(directory)
    new = sorted(name for name, key in current.items() if seen.get(name) != key)
    next_cursor = json.dumps(current, sort_keys=True)
    if not new:
        return None, (cursor if current == seen else next_cursor)
    fingerprint = hashlib.sha256(json.dumps({n: current[n] for n in new}, sort_keys=True).encode()).hexdigest()[:16]
    request = RunRequest(
        run_key=f"raw-files-{fingerprint}",
        tags={
            **all_scenarios_tags(scenarios),
            "oxyrec/trigger": "new_raw_file",
            "oxyrec/files": ",".join(new)[:200],
        },
    )
    return request, next_cursor


@sensor(job=ingest_job, minimum_interval_seconds=60,
        description="New or changed raw files in the file source directory -> one ingest run over every scenario.")
def new_raw_file_sensor(context: SensorEvaluationContext, data_source: DataSourceResource):
    directory = raw_landing_dir(data_source)
    if directory is None:
        return SkipReason("the data source is the synthetic world: no landing directory to watch")
    request, cursor = evaluate_raw_landing(directory, context.cursor)
    if cursor != context.cursor:
        context.update_cursor(cursor)
    if request is None:
        return SkipReason(f"no new raw files in {directory}")
    context.log.info(f"new raw files in {directory}: {request.tags['oxyrec/files']} -> ingest")
    return request
