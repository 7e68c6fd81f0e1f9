"""The Dagster code location: ``dagster dev -m orchestration.definitions`` (or ``workspace.yaml``)."""

from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

import assets.analysis
import assets.checks
import assets.embeddings
import assets.features
import assets.instructions
import assets.raw
import assets.rl
import assets.semantic_ids
import assets.serving
import assets.training

from .jobs import (
    daily_instructions_job,
    daily_instructions_schedule,
    daily_retraining_job,
    daily_retraining_schedule,
    ingest_job,
    refresh_features_job,
    scenario_refresh_job,
    train_sft_job,
    deploy_job,
)
from .params import ParamsResource
from .automation import freshness_checks, freshness_checks_sensor
from .notifications import run_failure_notifier
from .sensors import high_value_action_sensor, instruction_updates_job, new_raw_file_sensor
from .resources import default_resources
from .settings import current_settings

ASSET_MODULES = [assets.raw, assets.embeddings, assets.semantic_ids, assets.instructions, assets.features,
                 assets.training, assets.serving, assets.rl, assets.analysis]
CHECK_MODULES = [assets.checks, assets.semantic_ids, assets.training, assets.serving, assets.rl]


def build_definitions(resources: dict | None = None) -> Definitions:
    settings = current_settings()
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=[*load_asset_checks_from_modules(CHECK_MODULES), *freshness_checks],
        jobs=[ingest_job, daily_instructions_job, daily_retraining_job, refresh_features_job, scenario_refresh_job,
              instruction_updates_job,
              train_sft_job, deploy_job],
        sensors=[high_value_action_sensor, new_raw_file_sensor, run_failure_notifier, freshness_checks_sensor],
        schedules=[daily_instructions_schedule, daily_retraining_schedule],
        resources={**default_resources(settings), "params": ParamsResource(), **(resources or {})},
    )


defs = build_definitions()
