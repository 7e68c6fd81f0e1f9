"""Raw data assets: the item catalog, user profiles and per-scenario interactions, plus the unified log.

Loading errors (missing file or column, malformed timestamps, ...) fail the asset before anything is written,
so the previous good materialization stays in place. Content problems are caught by the blocking Great
Expectations gates in ``assets/checks.py``.
"""


import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, asset

from models.data.loaders import unify_interactions
from orchestration.params import ParamsResource
from orchestration.partitions import scenario_partitions
from orchestration.resources import DataSourceResource

from ._metadata import code_version, frame_preview, md

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "raw"


@asset(group_name=GROUP, kinds={"pandas", "parquet"}, code_version=CODE_VERSION)
def raw_items(context: AssetExecutionContext, data_source: DataSourceResource) -> pd.DataFrame:
    """The item catalog (item_id, title, category, brand, price, description, ...)."""
    items = data_source.items()
    context.add_output_metadata(
        {
            "source": data_source.source,
            "dataset_dir": str(data_source.dataset_dir()),
            "dagster/row_count": len(items),
            "categories": int(items["category"].nunique()),
            "preview": frame_preview(items[["item_id", "title", "category"]]),
        }
    )
    return items


@asset(group_name=GROUP, kinds={"pandas", "parquet"}, code_version=CODE_VERSION)
def raw_users(context: AssetExecutionContext, data_source: DataSourceResource) -> pd.DataFrame:
    """User profiles; when the source has no users file, the ids seen in interactions with no profile."""
    users = data_source.users()
    if users is None:
        users = pd.DataFrame({"user_id": sorted(data_source.interactions()["user_id"].unique())})
    context.add_output_metadata(
        {"dagster/row_count": len(users), "profile_columns": MetadataValue.json(list(users.columns))}
    )
    return users


@asset(
    group_name=GROUP,
    partitions_def=scenario_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"pandas", "parquet"},
    code_version=CODE_VERSION,
)
def raw_interactions(context: AssetExecutionContext, data_source: DataSourceResource) -> dict[str, pd.DataFrame]:
    """Per-scenario interaction logs (user_id, item_id, timestamp, scenario, action, query).

    Returns ``{scenario: frame}`` for the partitions of the run: one scenario for a backfill of that
    scenario, all of them for the daily run.
    """
    frames = {scenario: data_source.interactions(scenario) for scenario in context.partition_keys}
    summary = pd.DataFrame(
        [
            {
                "scenario": scenario,
                "rows": len(frame),
                "users": frame["user_id"].nunique(),
                "items": frame["item_id"].nunique(),
                **frame["action"].value_counts().to_dict(),
            }
            for scenario, frame in frames.items()
        ]
    ).fillna(0)
    context.add_output_metadata(
        {"dagster/row_count": int(summary["rows"].sum()), "per_scenario": md(summary)}
    )
    return frames


@asset(group_name=GROUP, kinds={"pandas", "parquet"}, code_version=CODE_VERSION)
def interaction_log(
    context: AssetExecutionContext, raw_interactions: dict[str, pd.DataFrame], params: ParamsResource
) -> pd.DataFrame:
    """All scenarios in one time-ordered log (same-second events in the source file's row order); users below
    the minimum history length are dropped."""
    minimum = params.settings.validation.min_interactions_per_user
    log, dropped_users = unify_interactions(raw_interactions.values(), minimum)
    per_scenario = log.groupby("scenario").agg(rows=("item_id", "size"), users=("user_id", "nunique"))
    context.add_output_metadata(
        {
            "dagster/row_count": len(log),
            "users": int(log["user_id"].nunique()),
            "dropped_users_below_min_history": dropped_users,
            "min_interactions_per_user": minimum,
            "per_scenario": md(per_scenario.reset_index()),
        }
    )
    return log
