"""Data-validation gates: Great Expectations 1.x suites run as blocking Dagster asset checks.

A failing gate has ERROR severity, so no downstream asset of the gated one runs in that run; the check's
description names each failed expectation, its column and how many rows broke it, and the metadata holds
the full expectation table.
"""


import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetIn, MetadataValue, asset_check

from models.data.validation import ValidationReport, validate_interactions, validate_items
from orchestration.params import ParamsResource
from orchestration.partitions import SCENARIOS, scenario_partitions

from .raw import interaction_log, raw_interactions, raw_items


def gate_result(report: ValidationReport) -> AssetCheckResult:
    failures = report.failures()
    return AssetCheckResult(
        passed=report.success,
        severity=AssetCheckSeverity.ERROR,
        description=report.summary() if failures else f"all expectations passed on {report.row_count} rows",
        metadata={
            "rows": report.row_count,
            "failed_expectations": len(failures),
            "failed_columns": MetadataValue.json(sorted({f.column or "" for f in failures})),
            "expectations": MetadataValue.md(report.to_markdown()),
        },
    )


@asset_check(asset=raw_items, blocking=True, description="GX: schema, unique non-null ids, prices > 0")
def raw_items_gate(raw_items: pd.DataFrame) -> AssetCheckResult:
    return gate_result(validate_items(raw_items))


@asset_check(
    asset=raw_interactions,
    blocking=True,
    partitions_def=scenario_partitions,
    additional_ins={"items": AssetIn("raw_items")},
    description="GX: schema, parseable in-range timestamps, known items/scenario/actions",
)
def raw_interactions_gate(
    raw_interactions: dict[str, pd.DataFrame], items: pd.DataFrame, params: ParamsResource
) -> AssetCheckResult:
    settings = params.settings
    report = validate_interactions(
        pd.concat(list(raw_interactions.values()), ignore_index=True),
        item_ids=items["item_id"],
        known_scenarios=SCENARIOS,
        min_interactions_per_user=1,  # history length is gated on the unified log, not per scenario
        timestamp_range=settings.validation.timestamp_range(),
    )
    return gate_result(report)


@asset_check(
    asset=interaction_log,
    blocking=True,
    additional_ins={"items": AssetIn("raw_items")},
    description="GX: minimum history per user for training, every item in the catalog",
)
def interaction_log_gate(interaction_log: pd.DataFrame, items: pd.DataFrame, params: ParamsResource) -> AssetCheckResult:
    settings = params.settings
    report = validate_interactions(
        interaction_log,
        item_ids=items["item_id"],
        known_scenarios=SCENARIOS,
        min_interactions_per_user=settings.validation.min_interactions_per_user,
        timestamp_range=settings.validation.timestamp_range(),
    )
    return gate_result(report)
