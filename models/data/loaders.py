"""Load items / interactions / users files in the standard schema (see :mod:`models.data.schema`).

Each loader reads ``.parquet`` or ``.csv``, checks the required columns, and normalizes:

- ids (``user_id``, ``item_id``) become Python ``str``; CSVs are read with ``dtype=str`` for them so "0042"
  stays "0042", and integer (or whole-float) ids from parquet become "242", never "242.0";
  CSV string columns treat only empty cells as missing (an id "NA" or "null" is kept as text);
- ``timestamp`` becomes int64 Unix seconds UTC. Accepted: integers, whole floats, numeric strings,
  ISO-8601 strings (a zone offset is honoured, no zone means UTC), datetime64 columns;
- ``scenario`` is stripped of surrounding whitespace; ``action`` is stripped and lower-cased;
- missing optional columns are added and nulls in them filled with the defaults of the schema
  (``action`` "click", ``query`` "", ``brand`` "", ``description`` "", ``price`` NaN);
- extra columns are kept unchanged, row order is kept (ties in time are broken by row order downstream).

Every problem raises :class:`DataSourceError` naming the file and the column: missing file, empty file,
missing required column, malformed timestamps (count + first example), unknown actions, unknown scenarios
(when the allowed ``scenarios`` are given), malformed prices, duplicate user ids in the users file.
Content checks that are not about parsing (duplicate item ids, ids missing from the catalog, ...) are the
job of the validation gates in :mod:`models.data.validation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import (
    ACTIONS,
    FILE_SUFFIXES,
    INTERACTION_OPTIONAL_DEFAULTS,
    INTERACTION_REQUIRED,
    INTERACTION_STRING_COLUMNS,
    ITEM_OPTIONAL_DEFAULTS,
    ITEM_REQUIRED,
    ITEM_STRING_COLUMNS,
    SOURCE_ROW,
    USER_REQUIRED,
    DataSourceError,
)

# pandas' default NA markers: still used for columns outside the schema's string columns (e.g. ratings)
_DEFAULT_NA = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip
_EPOCH = pd.Timestamp(0, tz="UTC")
_ONE_SECOND = pd.Timedelta(1, "s")
# "...12:30[:45[.123]] <zone>" where zone is Z or +HH[:MM]; a bare date like 2018-01-02 must not match
_HAS_ZONE = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")


# ----------------------------------------------------------------------------------------------- files
def find_table(directory: str | Path, name: str) -> Path | None:
    """``<directory>/<name>.parquet`` or ``<name>.csv`` (parquet wins when both exist), else None."""
    directory = Path(directory)
    for suffix in FILE_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _read_table(path: str | Path, string_columns: Iterable[str]) -> tuple[pd.DataFrame, Path]:
    path = Path(path)
    if not path.exists():
        raise DataSourceError("file not found", file=path)
    if not path.is_file():
        raise DataSourceError("is not a file", file=path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several types for corrupt files
            raise DataSourceError(f"cannot read parquet file ({type(error).__name__}: {error})", file=path) from error
    elif name.endswith((".csv", ".csv.gz")):
        frame = _read_csv(path, set(string_columns))
    else:
        raise DataSourceError("unsupported file type: use .parquet or .csv", file=path)
    if len(frame) == 0:
        raise DataSourceError(f"file has no rows (columns: {list(frame.columns)})", file=path)
    return frame.reset_index(drop=True), path


def _read_csv(path: Path, string_columns: set[str]) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError as error:
        raise DataSourceError("file is empty (no header, no rows)", file=path) from error
    # schema string columns are read as text and only an empty cell counts as missing there
    na_values = {c: ([""] if c in string_columns else _DEFAULT_NA) for c in header}
    dtype = {c: str for c in header if c in string_columns}
    try:
        return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=na_values)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise DataSourceError(f"cannot parse CSV ({type(error).__name__}: {error})", file=path) from error


def _require_columns(frame: pd.DataFrame, required: Sequence[str], path: Path) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataSourceError(
            f"missing required column(s) {missing}; the file has columns {list(frame.columns)}",
            file=path,
            column=missing[0],
        )


# ------------------------------------------------------------------------------------------ normalizers
def to_str_ids(values: pd.Series) -> pd.Series:
    """Ids as Python ``str`` (object dtype), missing values kept as NaN; whole floats lose their ".0"."""
    mask = values.notna().to_numpy()
    if pd.api.types.is_float_dtype(values.dtype):
        present = values[mask].to_numpy(dtype=np.float64)
        whole = np.all(np.isfinite(present) & (present == np.floor(present)))
        # an int id column with a null is stored as float by pandas/parquet: print 242.0 as "242"
        text = present.astype(np.int64).astype(str) if whole else present.astype(str)
    else:
        text = values[mask].astype(str).to_numpy(dtype=object)
    if mask.all():
        return pd.Series(text.astype(object), index=values.index, name=values.name, dtype=object)
    out = pd.Series(np.nan, index=values.index, name=values.name, dtype=object)
    out[mask] = text
    return out


def _example(values: pd.Series, bad: np.ndarray) -> str:
    first = int(np.flatnonzero(bad)[0])
    value = values.iloc[first]
    return f"row {first}: {(value.item() if isinstance(value, np.generic) else value)!r}"


def to_unix_seconds(values: pd.Series, file: str | Path | None = None, column: str = "timestamp") -> pd.Series:
    """int64 Unix seconds (UTC) from ints, whole floats, numeric strings, ISO-8601 strings or datetimes.

    Raises :class:`DataSourceError` saying how many rows are malformed (null, fractional, unparseable)
    and showing the first one.
    """
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        seconds = pd.Series(np.nan, index=values.index)
    elif pd.api.types.is_integer_dtype(dtype) and not values.hasnans:
        return values.astype(np.int64)
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        stamps = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        seconds = (stamps - _EPOCH) // _ONE_SECOND
    elif pd.api.types.is_numeric_dtype(dtype):
        seconds = pd.Series(values.to_numpy(dtype=np.float64, na_value=np.nan), index=values.index)
    else:
        text = values.astype("string").str.strip()
        seconds = pd.to_numeric(text, errors="coerce").astype(np.float64)
        rest = (seconds.isna() & text.notna()).to_numpy()
        if rest.any():
            seconds[rest] = _parse_iso8601(text[rest])
    numbers = seconds.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers != np.floor(numbers))
    if bad.any():
        raise DataSourceError(
            f"{int(bad.sum())} of {len(values)} rows have a malformed timestamp (expected int Unix seconds or "
            f"ISO-8601; missing or fractional values count too), e.g. {_example(values, bad)}",
            file=file,
            column=column,
        )
    return pd.Series(numbers.astype(np.int64), index=values.index, name=values.name)


def _parse_iso8601(text: pd.Series) -> np.ndarray:
    # Parse zoned and naive strings separately: pandas 2.3 with format="ISO8601" applies the offset of an
    # earlier zoned string to a later naive one in the same call. Naive times are taken as UTC.
    zoned = text.str.contains(_HAS_ZONE, na=False).to_numpy()
    out = np.full(len(text), np.nan)
    for part in (zoned, ~zoned):
        if part.any():
            stamps = pd.to_datetime(text[part], utc=True, errors="coerce", format="ISO8601")
            out[part] = ((stamps - _EPOCH) // _ONE_SECOND).to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _fill_optional(frame: pd.DataFrame, defaults: dict[str, object]) -> None:
    for column, default in defaults.items():
        if column not in frame.columns:
            frame[column] = default
        elif isinstance(default, str):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), default).astype(str)


def _to_text(values: pd.Series) -> pd.Series:
    """Non-null values as ``str`` (object dtype); missing stays NaN."""
    if values.dtype == object and values.map(type).eq(str).all():
        return values  # the common case (CSV read with dtype=str, no nulls): nothing to convert
    return to_str_ids(values)


def _describe_counts(values: pd.Series, limit: int = 10) -> str:
    counts = values.value_counts(dropna=False)
    shown = ", ".join(f"{('<missing>' if pd.isna(k) else repr(k))} ({n} rows)" for k, n in counts.head(limit).items())
    more = f" and {len(counts) - limit} more" if len(counts) > limit else ""
    return shown + more


# --------------------------------------------------------------------------------------------- loaders
def load_items(path: str | Path) -> pd.DataFrame:
    """The item catalog: item_id, title, category, brand, price (float), description, plus extra columns."""
    frame, path = _read_table(path, ITEM_STRING_COLUMNS)
    _require_columns(frame, ITEM_REQUIRED, path)
    for column in ITEM_REQUIRED:
        frame[column] = to_str_ids(frame[column]) if column == "item_id" else _to_text(frame[column])
    _fill_optional(frame, ITEM_OPTIONAL_DEFAULTS)
    price = pd.to_numeric(frame["price"], errors="coerce")
    bad = (price.isna() & frame["price"].notna()).to_numpy()
    if bad.any():
        raise DataSourceError(
            f"{int(bad.sum())} of {len(frame)} rows have a non-numeric price (write plain numbers, e.g. 12.99; "
            f"leave unknown prices empty), e.g. {_example(frame['price'], bad)}",
            file=path,
            column="price",
        )
    frame["price"] = price.astype(np.float64)
    return frame


def load_interactions(path: str | Path, scenarios: Sequence[str] | None = None) -> pd.DataFrame:
    """The interaction log: user_id, item_id, timestamp (int64 s UTC), scenario, action, query, extras.

    With ``scenarios`` given, a scenario outside that list is an error (all unknown ones are listed).
    """
    frame, path = _read_table(path, INTERACTION_STRING_COLUMNS)
    _require_columns(frame, INTERACTION_REQUIRED, path)
    frame["user_id"] = to_str_ids(frame["user_id"])
    frame["item_id"] = to_str_ids(frame["item_id"])
    frame["timestamp"] = to_unix_seconds(frame["timestamp"], file=path, column="timestamp")
    scenario = _to_text(frame["scenario"]).str.strip()
    frame["scenario"] = scenario.where(scenario != "", np.nan)
    _fill_optional(frame, INTERACTION_OPTIONAL_DEFAULTS)
    frame["action"] = frame["action"].str.strip().str.lower()

    unknown_action = ~frame["action"].isin(ACTIONS)
    if unknown_action.any():
        raise DataSourceError(
            f"{int(unknown_action.sum())} rows have an unknown action (allowed: {list(ACTIONS)}): "
            f"{_describe_counts(frame.loc[unknown_action, 'action'])}",
            file=path,
            column="action",
        )
    if scenarios is not None:
        allowed = {str(s).strip() for s in scenarios}
        unknown = ~frame["scenario"].isin(allowed)
        if unknown.any():
            raise DataSourceError(
                f"{int(unknown.sum())} rows have a scenario outside {sorted(allowed)}: "
                f"{_describe_counts(frame.loc[unknown, 'scenario'])}",
                file=path,
                column="scenario",
            )
    return frame


def load_users(path: str | Path) -> pd.DataFrame:
    """User profiles: user_id (str, unique) plus whatever profile columns the file has."""
    frame, path = _read_table(path, USER_REQUIRED)
    _require_columns(frame, USER_REQUIRED, path)
    frame["user_id"] = to_str_ids(frame["user_id"])
    duplicated = frame["user_id"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise DataSourceError(
            f"{int(frame['user_id'][duplicated].nunique())} user ids appear more than once "
            f"({int(duplicated.sum())} rows), e.g. {_example(frame['user_id'], duplicated)}",
            file=path,
            column="user_id",
        )
    return frame


def load_dataset(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """``(items, interactions, users or None)`` from a directory holding ``<table>.parquet|csv`` files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataSourceError("data directory does not exist", file=directory)
    paths = {}
    for name in ("items", "interactions"):
        paths[name] = find_table(directory, name)
        if paths[name] is None:
            raise DataSourceError(f"neither {name}.parquet nor {name}.csv exists", file=directory / name)
    users_path = find_table(directory, "users")
    users = load_users(users_path) if users_path is not None else None
    return load_items(paths["items"]), load_interactions(paths["interactions"]), users


def unify_interactions(partitions: Iterable[pd.DataFrame], min_interactions: int = 1) -> tuple[pd.DataFrame, int]:
    """One log from per-scenario partitions, ordered per user by time with ties in the source file's row order
    (``source_row`` when the partitions carry it, else the concatenation order), without users below
    ``min_interactions`` events. Returns (log, number of users dropped); ``source_row`` is not kept."""
    frames = list(partitions)
    if not frames:
        raise ValueError("unify_interactions: no partitions")
    log = pd.concat(frames, ignore_index=True)
    keys = ["user_id", "timestamp"] + ([SOURCE_ROW] if SOURCE_ROW in log.columns else [])
    if SOURCE_ROW in log.columns and log[SOURCE_ROW].isna().any():
        raise ValueError(f"unify_interactions: some partitions lack {SOURCE_ROW!r}; re-materialize them all")
    log = log.sort_values(keys, kind="stable").drop(columns=[SOURCE_ROW], errors="ignore").reset_index(drop=True)
    counts = log.groupby("user_id")["item_id"].transform("size")
    dropped = int(log.loc[counts < min_interactions, "user_id"].nunique())
    return log[counts >= min_interactions].reset_index(drop=True), dropped


def load_event_files(paths: Sequence[str | Path]) -> pd.DataFrame:
    """New interaction events landed by the application: JSON lines in the standard interaction schema (with
    ``action``); ids as strings, timestamps as Unix seconds, ``query`` "" when absent. Empty for no paths."""
    frames = [pd.read_json(p, lines=True, dtype=False) for p in paths if p]
    if not frames:
        return pd.DataFrame()
    events = pd.concat(frames, ignore_index=True)
    missing = [c for c in ("user_id", "item_id", "timestamp", "scenario", "action") if c not in events.columns]
    if missing:
        raise DataSourceError(f"missing column(s) {missing}", file=",".join(map(str, paths)), column=missing[0])
    for column in ("user_id", "item_id"):
        events[column] = to_str_ids(events[column])
    events["timestamp"] = to_unix_seconds(events["timestamp"], file=",".join(map(str, paths)), column="timestamp")
    events["query"] = events["query"].fillna("") if "query" in events else ""
    return events
