"""Feast features, the fast path's inputs: ``feature_sources`` -> ``feast_registry`` (feast apply) ->
``online_features`` (materialized to SQLite or Redis), and the point-in-time ``training_examples`` for SFT. The
instructions they carry are built in assets/instructions.py.
"""

import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from dagster import AssetExecutionContext, AssetIn, MetadataValue, asset

from models.eval.split import training_events
from models.features import instruction_coverage, source_tables, training_entities
from models.reasoning import HIDDEN_USER_COLUMNS
from orchestration.params import ParamsResource
from orchestration.partitions import SCENARIOS
from orchestration.resources import FeatureStoreResource

from ._metadata import code_version

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "features"


@asset(
    group_name=GROUP,
    ins={"reasoning_instructions": AssetIn(metadata={"allow_missing_partitions": True})},
    kinds={"feast", "parquet"},
    code_version=CODE_VERSION,
)
def feature_sources(
    context: AssetExecutionContext,
    interaction_log: pd.DataFrame,
    raw_users: pd.DataFrame,
    raw_items: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    scenario_instructions: pd.DataFrame,
    reasoning_instructions: dict[str, pd.DataFrame],
    params: ParamsResource,
    feature_store: FeatureStoreResource,
) -> dict:
    """Feast source tables (point-in-time stamped) written to the offline store."""
    section = params.settings.features
    # observable profile columns only: the synthetic world also stores its hidden ground truth per user
    profile_columns = [c for c in raw_users.columns if c != "user_id" and c not in HIDDEN_USER_COLUMNS]
    tables = source_tables(
        interaction_log, raw_users, raw_items, item_semantic_ids,
        dict(zip(scenario_instructions["scenario"], scenario_instructions["scenario_text"])),
        np.stack(scenario_instructions["scenario_embedding"].to_numpy()), list(reasoning_instructions.values()),
        n_short=section.n_short, n_long=section.n_long, profile_columns=profile_columns,
        popularity_log=training_events(interaction_log),  # popularity counted without held-out events
    )
    paths = feature_store.store().write_sources(tables)
    rows = {name: len(frame) for name, frame in tables.items()}
    context.add_output_metadata(
        {"rows": MetadataValue.json(rows), "profile_columns": MetadataValue.json(profile_columns),
         "instruction_days": sum(len(f) > 0 for f in reasoning_instructions.values())}
    )
    return {"paths": {k: str(v) for k, v in paths.items()}, "rows": rows}


@asset(group_name=GROUP, deps=["feature_sources"], kinds={"feast"}, code_version=CODE_VERSION)
def feast_registry(context: AssetExecutionContext, feature_store: FeatureStoreResource) -> dict:
    """``feast apply``: entities, feature views and feature services in the registry."""
    summary = feature_store.store().apply()
    context.add_output_metadata({"registry": MetadataValue.json(summary)})
    return summary


@asset(group_name=GROUP, deps=["feast_registry"], kinds={"feast", "sqlite"}, code_version=CODE_VERSION)
def online_features(context: AssetExecutionContext, feature_store: FeatureStoreResource) -> dict:
    """Materialize the latest feature values into the online store (SQLite locally, Redis in production)."""
    store = feature_store.store()
    start = time.perf_counter()
    report = store.materialize()
    seconds = time.perf_counter() - start
    # Show a user whose latest instruction says the most (a life event or cart, not the no-history default).
    latest = pq.read_table(
        store.source_path("reasoning_instruction"), columns=["user_id", "instruction_text", "generated_at"]
    ).to_pydict()
    newest = max(latest["generated_at"], default=None)
    candidates = [(len(t), u) for u, t, g in zip(latest["user_id"], latest["instruction_text"], latest["generated_at"])
                  if g == newest]
    example_user = str(max(candidates)[1]) if candidates else "unknown-user"
    online = store.online_features(example_user, SCENARIOS[0])
    context.add_output_metadata(
        {
            "online_store": feature_store.online,
            "seconds": round(seconds, 2),
            "example_user": example_user,
            "example_instruction": MetadataValue.md(str(online.get("instruction_text") or "(default instruction)")),
            "example_short_len": int(online.get("short_len") or 0),
        }
    )
    return {"online_store": feature_store.online, "materialize": report, "example_user": example_user,
            "example_instruction": online.get("instruction_text")}


@asset(group_name=GROUP, deps=["feast_registry"], kinds={"feast", "parquet"}, code_version=CODE_VERSION)
def training_examples(
    context: AssetExecutionContext, interaction_log: pd.DataFrame, feature_store: FeatureStoreResource
) -> pd.DataFrame:
    """Point-in-time-correct SFT examples: one row per target interaction (leave-last-out split), with
    the features as they were just before it, from Feast ``get_historical_features``."""
    entities = training_entities(interaction_log)
    entities = entities[entities["position"] >= 1].reset_index(drop=True)  # a first event has no history
    start = time.perf_counter()
    frame = feature_store.store().historical_features(entities, service="training")
    seconds = time.perf_counter() - start
    splits = frame["split"].value_counts().to_dict()
    coverage = instruction_coverage(frame)
    context.add_output_metadata(
        {
            "dagster/row_count": len(frame),
            "splits": MetadataValue.json(splits),
            "with_instruction": coverage["all"],
            "instruction_coverage": MetadataValue.json({k: round(v, 4) for k, v in coverage.items()}),
            "mean_long_len": float(frame["long_len"].mean()) if len(frame) else 0.0,
            "seconds": round(seconds, 1),
        }
    )
    return frame
