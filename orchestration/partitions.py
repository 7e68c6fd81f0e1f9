"""Partitions. Scenarios are data, not code: the static scenario partitions come from ``params.yaml``
(``data.scenarios``), or from the distinct scenarios of the file source when that is ``auto``."""

from __future__ import annotations

import pandas as pd
from dagster import StaticPartitionsDefinition

from models.data.loaders import find_table

from .settings import Settings, current_settings, resolve_path


def resolve_scenarios(settings: Settings) -> list[str]:
    if settings.data.scenarios != "auto":
        return list(settings.data.scenarios)
    directory = resolve_path(settings.data.files_dir or ".")
    path = find_table(directory, "interactions")
    if path is None:
        raise FileNotFoundError(f"data.scenarios is 'auto' but {directory} has no interactions.parquet/.csv")
    column = (
        pd.read_parquet(path, columns=["scenario"])["scenario"]
        if path.suffix == ".parquet"
        else pd.read_csv(path, usecols=["scenario"], dtype=str)["scenario"]
    )
    scenarios = sorted(column.dropna().astype(str).str.strip().unique().tolist())
    if not scenarios:
        raise ValueError(f"{path}: column 'scenario' is empty, no scenario partitions can be built")
    return scenarios


SCENARIOS: list[str] = resolve_scenarios(current_settings())
scenario_partitions = StaticPartitionsDefinition(SCENARIOS)
