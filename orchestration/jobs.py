"""Jobs and schedules.

``daily_retraining`` (the scheduled job) materializes the whole graph in ONE run over every scenario partition:
raw data → features → SFT + SASRec → evaluation gate → reward model → RL → export gate → deploy to Triton, every
blocking check included. The per-scenario assets use single-run backfill policies, so the run covers the full
partition range and the unified assets downstream run once, after all scenarios. ``refresh_features`` is the
same run without training and serving (data and features only).
Assets in the ``analysis`` group (ablations, comparisons) are off the schedule: materialize them on demand.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    RunRequest,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from .partitions import SCENARIOS, instruction_day_partitions
from .settings import current_settings

PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"


def all_scenarios_tags(scenarios: list[str] = SCENARIOS) -> dict[str, str]:
    """Run tags that make one run cover every scenario partition."""
    return {PARTITION_RANGE_START: scenarios[0], PARTITION_RANGE_END: scenarios[-1]}


ingest_job = define_asset_job(
    "ingest",
    selection=AssetSelection.groups("raw"),
    description="Raw data and the unified interaction log, every gate included.",
)

daily_instructions_job = define_asset_job(
    "daily_instructions",
    selection=AssetSelection.assets("reasoning_instructions"),
    partitions_def=instruction_day_partitions,
    description="Slow thinking: the reasoning instructions of every user active that day (one per activity window).",
)

# the instructions have their own daily job; the near-line updates are the sensor's
_SCHEDULED = AssetSelection.all() - AssetSelection.groups("analysis") - AssetSelection.assets(
    "reasoning_instructions", "instruction_updates")

# Runs that deploy carry this tag; the instance (orchestration/dagster.yaml) queues them one at a time. The deploy
# function also holds a lock of its own (triton_repo/deploy.py), for in-process deploys like `make demo`'s.
DEPLOY_TAG = {"oxyrec/deploy": "true"}

daily_retraining_job = define_asset_job(
    "daily_retraining",
    selection=_SCHEDULED,
    tags=DEPLOY_TAG,
    description="The scheduled retraining, all scenarios in one run: features -> SFT -> RL -> deploy, every gate.",
)

refresh_features_job = define_asset_job(
    "refresh_features",
    selection=_SCHEDULED - AssetSelection.groups("training", "serving"),
    description="Raw data -> embeddings -> semantic IDs -> Feast -> training set, every gate, no training.",
)

train_sft_job = define_asset_job(
    "train_sft",
    selection=AssetSelection.groups("training"),
    description="SFT + SASRec, their evaluation and gate, the reward model and RL post-training.",
)

deploy_job = define_asset_job(
    "deploy",
    selection=AssetSelection.groups("serving"),
    tags=DEPLOY_TAG,
    description="Export the serving candidate and deploy it to Triton (parity gate, staged, smoke-tested, canary, "
                "rolled back on failure).",
)

scenario_refresh_job = define_asset_job(
    "scenario_refresh",
    selection=AssetSelection.assets("raw_interactions"),
    description="Re-load one scenario's partition (pick it in the launchpad or a backfill).",
)

_schedule_settings = current_settings().schedule


@schedule(
    job=daily_retraining_job,
    cron_schedule=_schedule_settings.retrain_cron,
    execution_timezone=_schedule_settings.timezone,
    description="Daily retraining: features -> semantic IDs -> ... with every gate, all scenarios.",
)
def daily_retraining_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    scheduled = context.scheduled_execution_time
    return RunRequest(
        run_key=f"daily-{scheduled:%Y-%m-%d}" if scheduled else None,
        tags={**all_scenarios_tags(), "oxyrec/trigger": "schedule"},
    )


# Partition D holds the instructions of the activity that ended during D: the run at instructions_cron on day
# D + 1 materializes partition D (the last complete day; the near-line sensor pushed them online as they came).
_cron_minute, _cron_hour = _schedule_settings.instructions_cron.split()[:2]
daily_instructions_schedule = build_schedule_from_partitioned_job(
    daily_instructions_job,
    hour_of_day=int(_cron_hour),
    minute_of_hour=int(_cron_minute),
    description="Daily batch of the reasoning instructions of yesterday's activity (slow thinking).",
)
