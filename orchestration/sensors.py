"""Sensors: the near-line path of fast-slow thinking.

``high_value_action_sensor`` watches the event landing directory (``<data root>/events/incoming``, where the
application or a stream consumer drops JSON-lines micro-batches of interactions). When files with cart/order
actions inside the incremental window appear, it requests an ``instruction_updates`` run for exactly those
users; the cursor (the newest file already seen) makes each file count once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dagster import RunRequest, SensorEvaluationContext, SkipReason, define_asset_job, sensor

from .settings import current_settings

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
