"""Partitions. Scenarios are data, not code: the static scenario partitions come from ``params.yaml``
(``data.scenarios``), or from the distinct scenarios of the file source when that is ``auto``.

Reasoning instructions have one partition per day of the data span (synthetic world: its configured window;
files: first to last interaction day, plus one): partition D holds the instructions generated during D (after the
users' activity windows that closed in D), optionally only the last ``features.instruction_history_days`` days.
"""

from __future__ import annotations

import pandas as pd
import datetime as dt

from dagster import DailyPartitionsDefinition, StaticPartitionsDefinition

from models.data.loaders import find_table

from .settings import Settings, current_settings, resolve_path


def _read_column(settings: Settings, column: str) -> pd.Series:
    directory = resolve_path(settings.data.files_dir or ".")
    path = find_table(directory, "interactions")
    if path is None:
        raise FileNotFoundError(f"{directory} has no interactions.parquet/.csv")
    if path.suffix == ".parquet":
        return pd.read_parquet(path, columns=[column])[column]
    return pd.read_csv(path, usecols=[column], dtype=str)[column]


def data_span(settings: Settings) -> tuple[dt.date, dt.date]:
    """First and last day (UTC) with interactions."""
    if settings.data.source == "synthetic":
        start = dt.date.fromisoformat(settings.synthetic.start_date)
        return start, start + dt.timedelta(days=settings.synthetic.n_days - 1)
    from models.data.loaders import to_unix_seconds

    seconds = to_unix_seconds(_read_column(settings, "timestamp"), column="timestamp")
    to_day = lambda s: dt.datetime.fromtimestamp(int(s), dt.timezone.utc).date()  # noqa: E731
    return to_day(seconds.min()), to_day(seconds.max())


def instruction_day_bounds(settings: Settings) -> tuple[dt.date, dt.date]:
    """[start, end) of the daily instruction partitions: from the first day with events through the day after
    the last one (an instruction is generated when a user's activity window closes, which can be after
    midnight)."""
    first, last = data_span(settings)
    end = last + dt.timedelta(days=2)
    days = settings.features.instruction_history_days
    start = max(first, end - dt.timedelta(days=days)) if days else first
    return start, end


def resolve_scenarios(settings: Settings) -> list[str]:
    if settings.data.scenarios != "auto":
        return list(settings.data.scenarios)
    column = _read_column(settings, "scenario")
    scenarios = sorted(column.dropna().astype(str).str.strip().unique().tolist())
    if not scenarios:
        raise ValueError(f"{settings.data.files_dir}: column 'scenario' is empty, no scenario partitions")
    return scenarios


SCENARIOS: list[str] = resolve_scenarios(current_settings())
scenario_partitions = StaticPartitionsDefinition(SCENARIOS)

INSTRUCTION_DAYS = instruction_day_bounds(current_settings())
instruction_day_partitions = DailyPartitionsDefinition(
    start_date=INSTRUCTION_DAYS[0].isoformat(), end_date=INSTRUCTION_DAYS[1].isoformat(), timezone="UTC"
)
