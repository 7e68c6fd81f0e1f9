"""Feast objects of the OxygenREC feature repository (entities, sources, feature views, feature services).

The table schemas come from :mod:`models.features.tables` (``KEYS``, ``FEATURES``: one source of truth, no
Feast needed to build the tables); this module maps them to Feast types (list<string> -> Array(String),
list<int64> -> Array(Int64), list<float> -> Array(Float32), string/int64/double -> String/Int64/Float64).

Entities: ``user`` (user_id), ``item`` (item_id), ``scenario`` (scenario), all strings.

Feature views (source = ``<source_dir>/<view>.parquet``, timestamp ``event_timestamp``, created
``created_timestamp``):

    user_profile           [user]            ttl none      profile columns (String) + profile_fields
    user_short_term        [user, scenario]  ttl none *    short_item_ids, short_sids, short_actions, short_len
    user_long_term         [user]            ttl none *    long_item_ids, long_scenarios, long_len
    item_features          [item]            ttl none      sid_codes, category, price, popularity_count, popularity_log
    scenario_instruction   [scenario]        ttl none      scenario_text, scenario_embedding (384 x Float32)
    reasoning_instruction  [user]            ttl 30 d *    instruction_text, instruction_embedding (384 x Float32),
                                                           generator_version, generated_at (Unix s)

``*`` configurable (``build(..., ttl_days={view: days or None})``; settings ``features.history_ttl_days`` and
``features.instruction_max_age_days``). Behaviour never expires by default: a user who comes back after months
still has their last N interactions, which remain the best signal (the tables already keep only the last N).
An instruction older than its maximum age is dropped as stale (the generator then uses its default instruction).

``reasoning_instruction`` reads from the PushSource ``reasoning_instruction_push`` (batch source: its parquet
file), so the near-line reasoner can push an updated instruction of one user straight to the online store.

Feature services: ``serving`` = the five user/scenario views (one request = user_id + scenario);
``training`` = ``serving`` + ``item_features`` joined on the *target* item (its SID codes are the label).

Two ways in: :func:`build` (used by ``feature_repo/store.py``, explicit paths) and the module-level objects
below (for the Feast CLI, ``feast -c feature_repo apply`` run from the project root), whose source directory is
``$OXYREC_FEAST_DATA`` (default ``<project>/data/feast/sources``); the profile columns are read from the
``user_profile.parquet`` found there (none if it does not exist yet).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int64, String

from models.features.tables import FEATURES, KEYS, RESERVED, TABLES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE_DIR = PROJECT_ROOT / "data" / "feast" / "sources"
PUSH_SOURCE = "reasoning_instruction_push"
# Feature freshness for point-in-time joins in days (None = no limit). Only these views may be configured.
DEFAULT_TTL_DAYS: dict[str, float | None] = {
    "user_short_term": None,
    "user_long_term": None,
    "reasoning_instruction": 30.0,  # instructions are refreshed when the user is active: older means stale
}
SERVING_VIEWS = ("user_profile", "user_short_term", "user_long_term", "scenario_instruction", "reasoning_instruction")
TRAINING_VIEWS = (*SERVING_VIEWS, "item_features")
DESCRIPTIONS = {
    "user_profile": "Static user profile attributes as strings, plus profile_fields = ['column=value', ...].",
    "user_short_term": "State after each event: last N items of the user in this scenario (oldest first), "
                       "their SID codes flattened item by item, and actions.",
    "user_long_term": "State after each event: last M items of the user over all scenarios (oldest first); "
                      "the candidates of instruction-guided retrieval.",
    "item_features": "Item SID codes, category, price, and cumulative popularity known at the end of each day.",
    "scenario_instruction": "Scenario instruction Is: text and its 384-d embedding.",
    "reasoning_instruction": "Contextual reasoning instruction Ir from the near-line LLM (slow thinking): text, "
                             "384-d embedding, generator version and generation time.",
}

_FEAST_TYPES = {pa.string(): String, pa.int64(): Int64, pa.float64(): Float64, pa.float32(): Float32}


def feast_type(arrow_type: pa.DataType):
    """Feast type of an arrow type (scalars and lists of scalars)."""
    if pa.types.is_list(arrow_type):
        return Array(_FEAST_TYPES[arrow_type.value_type])
    return _FEAST_TYPES[arrow_type]


def profile_columns_of(path: str | os.PathLike) -> list[str]:
    """Profile columns of a written ``user_profile.parquet`` (its columns minus keys, fixed features, timestamps)."""
    fixed = {*KEYS["user_profile"], *FEATURES["user_profile"], *RESERVED}
    return [c for c in pq.read_schema(path).names if c not in fixed]


def _check_profile_columns(columns: Sequence[str]) -> list[str]:
    taken = {k for keys in KEYS.values() for k in keys} | {f for fs in FEATURES.values() for f in fs} | set(RESERVED)
    clash = [c for c in columns if c in taken]
    if clash:
        raise ValueError(f"profile columns {clash} clash with other feature/key names; rename them in the users table")
    return list(columns)


def ttls(ttl_days: Mapping[str, float | None] | None = None) -> dict[str, timedelta]:
    """Per-view TTL (``timedelta(0)`` = no limit): :data:`DEFAULT_TTL_DAYS` updated with ``ttl_days``."""
    days = dict(DEFAULT_TTL_DAYS)
    unknown = sorted(set(ttl_days or {}) - set(days))
    if unknown:
        raise ValueError(f"ttl_days: only {sorted(days)} have a configurable TTL, got {unknown}")
    days.update(ttl_days or {})
    out = {t: timedelta(0) for t in TABLES}
    for view, d in days.items():
        if d is not None and not d > 0:
            raise ValueError(f"ttl_days[{view!r}] must be > 0 days or None (no limit), got {d!r}")
        out[view] = timedelta(days=d) if d is not None else timedelta(0)
    return out


def build(source_dir: str | os.PathLike, profile_columns: Sequence[str] = (),
          ttl_days: Mapping[str, float | None] | None = None) -> dict[str, object]:
    """All Feast objects for sources in ``source_dir`` (absolute path recommended), by name; ``ttl_days``
    overrides :data:`DEFAULT_TTL_DAYS`."""
    source_dir = Path(source_dir).resolve()
    profile_columns = _check_profile_columns(profile_columns)
    ttl = ttls(ttl_days)
    entities = {
        "user": Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A shopper."),
        "item": Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="A catalog item."),
        "scenario": Entity(name="scenario", join_keys=["scenario"], value_type=ValueType.STRING,
                           description="A recommendation scenario (homepage, cart, ...)."),
    }
    by_key = {"user_id": entities["user"], "item_id": entities["item"], "scenario": entities["scenario"]}
    objects: dict[str, object] = dict(entities)
    views = {}
    for table in TABLES:
        source = FileSource(
            name=f"{table}_source",
            path=str(source_dir / f"{table}.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        )
        objects[source.name] = source
        if table == "reasoning_instruction":
            source = PushSource(name=PUSH_SOURCE, batch_source=source)
            objects[source.name] = source
        features = dict(FEATURES[table])
        if table == "user_profile":
            features = {**{c: pa.string() for c in profile_columns}, **features}
        schema = [Field(name=k, dtype=String) for k in KEYS[table]]
        schema += [Field(name=n, dtype=feast_type(t)) for n, t in features.items()]
        views[table] = FeatureView(
            name=table,
            entities=[by_key[k] for k in KEYS[table]],
            ttl=ttl[table],
            schema=schema,
            source=source,
            online=True,
            description=DESCRIPTIONS[table],
        )
    objects.update(views)
    objects["serving"] = FeatureService(name="serving", features=[views[v] for v in SERVING_VIEWS],
                                        description="One online request: user_id + scenario.")
    objects["training"] = FeatureService(name="training", features=[views[v] for v in TRAINING_VIEWS],
                                         description="Point-in-time training rows: user_id + scenario + target item_id.")
    return objects


# ------------------------------------------------------------------ module-level objects for the Feast CLI
SOURCE_DIR = Path(os.environ.get("OXYREC_FEAST_DATA", DEFAULT_SOURCE_DIR))
if not SOURCE_DIR.is_absolute():
    SOURCE_DIR = PROJECT_ROOT / SOURCE_DIR  # relative to the project, not to the working directory
_profile_file = SOURCE_DIR / "user_profile.parquet"
_objects = build(SOURCE_DIR, profile_columns_of(_profile_file) if _profile_file.exists() else ())

user = _objects["user"]
item = _objects["item"]
scenario = _objects["scenario"]
reasoning_instruction_push = _objects[PUSH_SOURCE]
user_profile = _objects["user_profile"]
user_short_term = _objects["user_short_term"]
user_long_term = _objects["user_long_term"]
item_features = _objects["item_features"]
scenario_instruction = _objects["scenario_instruction"]
reasoning_instruction = _objects["reasoning_instruction"]
serving = _objects["serving"]
training = _objects["training"]
