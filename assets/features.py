"""Feast features and fast-slow thinking.

Slow path: ``reasoning_instructions`` (daily partitions; a full refresh of every user at the start of each
day) and the near-line ``instruction_updates`` (sensor-triggered, only users with a fresh cart/order action).
Fast path inputs: ``feature_sources`` -> ``feast_registry`` (feast apply) -> ``online_features``
(materialized to SQLite or Redis), and the point-in-time ``training_examples`` for SFT.
"""

import datetime as dt
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from dagster import AssetExecutionContext, AssetIn, BackfillPolicy, Config, MetadataValue, asset

from models.data.loaders import load_event_files
from models.eval.split import training_events
from models.features import instruction_coverage, source_tables, training_entities
from models.reasoning import HIDDEN_USER_COLUMNS, make_reasoner
from models.reasoning.refresh import refresh_after_activity, refresh_instructions
from orchestration.params import ParamsResource
from orchestration.partitions import SCENARIOS, instruction_day_partitions
from orchestration.resources import ArtifactStoreResource, FeatureStoreResource, TextEmbedderResource
from orchestration.settings import DEFAULT_SCENARIO_TEXTS, Settings

from ._metadata import code_version, md

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "features"


def reasoner_of(settings: Settings, artifacts: ArtifactStoreResource):
    f = settings.features
    return make_reasoner(f.reasoner, f.llm_base_url, f.llm_model, str(artifacts.asset_dir("cache") / "llm"))


DAY = 86_400


def day_start(partition_key: str) -> int:
    return int(dt.datetime.fromisoformat(partition_key).replace(tzinfo=dt.timezone.utc).timestamp())


@asset(group_name=GROUP, kinds={"pandas"}, code_version=CODE_VERSION)
def scenario_instructions(
    context: AssetExecutionContext, params: ParamsResource, text_embedder: TextEmbedderResource
) -> pd.DataFrame:
    """The scenario instruction Is of every scenario partition: its text and MiniLM embedding."""
    texts = params.settings.features.scenario_texts or DEFAULT_SCENARIO_TEXTS
    rows = {s: texts.get(s, f"{s.replace('_', ' ').capitalize()}: recommendations for this scenario.") for s in SCENARIOS}
    vectors = text_embedder.encoder.encode(list(rows.values()))
    frame = pd.DataFrame({"scenario": list(rows), "scenario_text": list(rows.values())})
    frame["scenario_embedding"] = list(vectors.astype(np.float32))
    context.add_output_metadata({"scenarios": md(frame[["scenario", "scenario_text"]])})
    return frame


@asset(
    group_name=GROUP,
    partitions_def=instruction_day_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"pandas"},
    code_version=CODE_VERSION,
)
def reasoning_instructions(
    context: AssetExecutionContext,
    interaction_log: pd.DataFrame,
    raw_items: pd.DataFrame,
    raw_users: pd.DataFrame,
    params: ParamsResource,
    text_embedder: TextEmbedderResource,
    artifacts: ArtifactStoreResource,
) -> dict[str, pd.DataFrame]:
    """Slow thinking, scaled with activity: partition D holds the Contextual Reasoning Instructions generated
    during day D, one per user and activity window (``features.incremental_window_minutes``) that ended in D,
    each built from everything the user did before it (point-in-time) and embedded with MiniLM."""
    settings = params.settings
    reasoner = reasoner_of(settings, artifacts)
    cache = text_embedder.cache()
    keys = context.partition_keys
    start = time.perf_counter()
    frame = refresh_after_activity(
        interaction_log, raw_items, raw_users, day_start(keys[0]), day_start(keys[-1]) + DAY, reasoner,
        text_embedder.encoder, cache=cache, window_s=60 * settings.features.incremental_window_minutes,
        window_days=settings.features.instruction_window_days, embedding=settings.features.instruction_embedding,
    )
    seconds = time.perf_counter() - start
    cache.save()
    day = pd.to_datetime(frame["generated_at"], unit="s", utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    out = {key: frame[day == key].reset_index(drop=True) for key in keys}
    context.log.info(f"{len(frame)} instructions for {frame['user_id'].nunique()} users over {len(keys)} days "
                     f"in {seconds:.1f} s")
    example = frame.iloc[-1] if len(frame) else None
    context.add_output_metadata(
        {
            "days": len(out),
            "instructions": int(len(frame)),
            "users": int(frame["user_id"].nunique()),
            "embedding_mb": round(len(frame) * text_embedder.encoder.dim * 4 / 2**20, 1),
            "seconds": round(seconds, 1),
            "generator_version": getattr(reasoner, "version", ""),
            "example_user": str(example["user_id"]) if example is not None else "",
            "example_instruction": MetadataValue.md(str(example["instruction_text"])) if example is not None else "",
        }
    )
    return out


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


class InstructionUpdateConfig(Config):
    """What the high-value-action sensor hands over: the affected users and the event files it read."""

    user_ids: list[str]
    event_files: list[str] = []


@asset(group_name=GROUP, deps=["online_features"], kinds={"feast"}, code_version=CODE_VERSION)
def instruction_updates(
    context: AssetExecutionContext,
    config: InstructionUpdateConfig,
    interaction_log: pd.DataFrame,
    raw_items: pd.DataFrame,
    raw_users: pd.DataFrame,
    params: ParamsResource,
    text_embedder: TextEmbedderResource,
    feature_store: FeatureStoreResource,
    artifacts: ArtifactStoreResource,
) -> pd.DataFrame:
    """Near-line update: regenerate the instructions of just the users with fresh cart/order actions (the
    log plus the newly landed events, as of now) and push them to the online store."""
    settings = params.settings
    events = load_event_files(config.event_files)
    log = pd.concat([interaction_log, events], ignore_index=True) if len(events) else interaction_log
    now = int(time.time())
    frame = refresh_instructions(
        log, raw_items, raw_users, now + 1, reasoner_of(settings, artifacts), text_embedder.encoder,
        cache=text_embedder.cache(), user_ids=config.user_ids,
        window_days=settings.features.instruction_window_days, embedding=settings.features.instruction_embedding,
    )
    store = feature_store.store()
    pushed = store.push_instructions(frame)
    readable = time.time()
    # action -> readable-online delay, per user: from their latest landed high-value action
    if len(events):
        latest = events[events["action"].isin(settings.features.high_value_actions)].groupby("user_id")["timestamp"].max()
        delays = (readable - latest.reindex(frame["user_id"]).dropna()).to_numpy()
    else:
        delays = np.array([])
    context.add_output_metadata(
        {
            "users_updated": pushed,
            "action_to_online_p50_s": float(np.median(delays)) if len(delays) else 0.0,
            "action_to_online_max_s": float(delays.max()) if len(delays) else 0.0,
            "example": MetadataValue.md(str(frame["instruction_text"].iloc[0])) if len(frame) else "",
        }
    )
    return frame.drop(columns=["instruction_embedding"])
