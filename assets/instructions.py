"""Slow thinking as features: ``scenario_instructions`` (text + MiniLM embedding per scenario), the daily partitions
of ``reasoning_instructions`` (one per user and activity window that ended that day, built from everything before
it: models/reasoning/refresh.py) and the near-line ``instruction_updates`` (sensor-triggered, only users with a
fresh cart/order action, pushed to the online store).
"""

import datetime as dt
import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, Config, MetadataValue, asset

from models.data.loaders import load_event_files
from models.reasoning import make_reasoner
from models.reasoning.refresh import action_to_online_seconds, refresh_after_activity, refresh_instructions
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
    delays = action_to_online_seconds(events, frame["user_id"], settings.features.high_value_actions, time.time())
    context.add_output_metadata({
        "users_updated": pushed, "action_to_online_p50_s": float(np.median(delays)) if len(delays) else 0.0,
        "action_to_online_max_s": float(delays.max()) if len(delays) else 0.0,
        "example": MetadataValue.md(str(frame["instruction_text"].iloc[0])) if len(frame) else ""})
    return frame.drop(columns=["instruction_embedding"])
