"""Feature tables for the Feast repository (pure pandas/numpy/pyarrow; Feast itself lives in feature_repo/)."""

from models.features.tables import (
    EPOCH,
    FEATURES,
    KEYS,
    SPLITS,
    TABLES,
    arrow_schema,
    event_micros,
    instruction_coverage,
    item_features_table,
    long_term_table,
    reasoning_instruction_table,
    scenario_instruction_table,
    short_term_table,
    source_tables,
    training_entities,
    user_profile_table,
)

__all__ = [
    "EPOCH",
    "FEATURES",
    "KEYS",
    "SPLITS",
    "TABLES",
    "arrow_schema",
    "event_micros",
    "instruction_coverage",
    "item_features_table",
    "long_term_table",
    "reasoning_instruction_table",
    "scenario_instruction_table",
    "short_term_table",
    "source_tables",
    "training_entities",
    "user_profile_table",
]
