"""Feast source tables: point-in-time feature rows built from the pipeline's frames (pandas/numpy/pyarrow only).

Every table has ``event_timestamp`` (UTC, microseconds: when the value becomes true) and ``created_timestamp``
(when it was written; Feast breaks ties between rows with equal event timestamps by it). Feast joins a
training example at time ``T`` to the latest row with ``event_timestamp <= T`` (and ``>= T - ttl``).

Event time with ties. Interactions are ordered per user by ``(timestamp, row order)`` (stable sort; MovieLens
has many events in the same second). Event ``k`` of a user gets the microsecond time

    t_k = timestamp_k * 1e6 + r_k,   r_k = rank of the event among the user's events with the same timestamp

(``r_k < 1e6``, so ``t`` is strictly increasing per user and stays inside the event's second).

Behaviour tables (one row per interaction = the state *after* that interaction, stamped ``t_k``):

- short term, keyed by ``(user_id, scenario)``: the last ``N`` events of the user in that scenario up to and
  including event k, oldest first: ``short_item_ids`` (Array(String)), ``short_sids`` (Array(Int64), the
  ``L+1`` codes of each item flattened item by item: ``[i_1 c_0..c_L, i_2 c_0..c_L, ...]``, length
  ``len * (L+1)``), ``short_actions`` (Array(String)), ``short_len``;
- long term, keyed by ``user_id``: the last ``M`` items over all scenarios, oldest first
  (``long_item_ids``, the scenario of each, ``long_scenarios``, ``long_len``): the candidate set of
  instruction-guided retrieval and the history of the (scenario-aware) SASRec baselines.

The windows are built without Python loops: with rows sorted by group, row ``i`` whose group starts at row
``g_i`` owns ``[max(g_i, i - N + 1), i]``; the flat index of all windows is
``repeat(start_i - off_i, len_i) + arange(sum len)`` with ``off`` the exclusive cumsum of ``len``, and the
column is a pyarrow ListArray over (offsets, values) (a ``pd.ArrowDtype`` list column: no per-row objects).

Training entities (:func:`training_entities`): one row per target interaction with
``event_timestamp = t_k - 1 us``, so the state rows of the target itself (stamped ``t_k``) and of anything
later can never be joined, while the previous event (``<= t_k - 1 us``) always can. Split labels are
leave-last-out per user (same order as :func:`models.eval.split.leave_last_out`): the last interaction is
``test``, the second last ``valid``, the rest ``train``; users with fewer than ``min_interactions`` (3)
interactions are all ``train``.

Item features (:func:`item_features_table`): static attributes (SID codes, category, price) with cumulative
popularity snapshots: one row per item at ``as_of`` (count 0), plus one row per (item, UTC day with
interactions) stamped at the *end* of that day (``(day + 1) * 86400`` s) with ``popularity_count`` = the
item's interactions up to the end of that day and ``popularity_log = log1p(popularity_count)``. A training
example therefore only sees popularity of closed days before it (a daily batch job), never its own event.

Static tables (profiles, scenario instructions) are stamped ``as_of`` (default 1970-01-01 UTC = "known since
always"; pass the time they became known if that matters). Reasoning instructions are stamped
``generated_at``: an example sees only instructions generated before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "EPOCH",
    "FEATURES",
    "KEYS",
    "SPLITS",
    "TABLES",
    "arrow_schema",
    "event_micros",
    "user_profile_table",
    "short_term_table",
    "long_term_table",
    "item_features_table",
    "scenario_instruction_table",
    "reasoning_instruction_table",
    "training_entities",
    "instruction_age_days",
    "instruction_coverage",
    "source_tables",
]

EPOCH = pd.Timestamp(0, unit="s", tz="UTC").as_unit("us")
SPLITS = ("train", "valid", "test")
US = 1_000_000  # microseconds per second: the resolution of all feature timestamps
DAY = 86_400
# names of the source tables (= parquet file stems = Feast feature view names)
TABLES = ("user_profile", "user_short_term", "user_long_term", "item_features", "scenario_instruction",
          "reasoning_instruction")
RESERVED = ("event_timestamp", "created_timestamp")
SID_PREFIX = "sid_"

# The one schema of the source tables (Feast-free; feature_repo/definitions.py maps it to Feast types).
# Join keys per table, then feature columns with their arrow types. user_profile also gets one String
# feature per profile column of the data (see user_profile_table), so its schema is completed at apply time.
KEYS: dict[str, tuple[str, ...]] = {
    "user_profile": ("user_id",),
    "user_short_term": ("user_id", "scenario"),
    "user_long_term": ("user_id",),
    "item_features": ("item_id",),
    "scenario_instruction": ("scenario",),
    "reasoning_instruction": ("user_id",),
}
_STR, _I64, _F32, _F64 = pa.string(), pa.int64(), pa.float32(), pa.float64()
FEATURES: dict[str, dict[str, pa.DataType]] = {
    "user_profile": {"profile_fields": pa.list_(_STR)},
    "user_short_term": {"short_item_ids": pa.list_(_STR), "short_sids": pa.list_(_I64),
                        "short_actions": pa.list_(_STR), "short_len": _I64},
    "user_long_term": {"long_item_ids": pa.list_(_STR), "long_scenarios": pa.list_(_STR), "long_len": _I64},
    "item_features": {"sid_codes": pa.list_(_I64), "category": _STR, "price": _F64,
                      "popularity_count": _I64, "popularity_log": _F64},
    "scenario_instruction": {"scenario_text": _STR, "scenario_embedding": pa.list_(_F32)},
    "reasoning_instruction": {"instruction_text": _STR, "instruction_embedding": pa.list_(_F32),
                              "generator_version": _STR, "generated_at": _I64},
}
TIMESTAMP = pa.timestamp("us", tz="UTC")


def arrow_schema(table: str, profile_columns: Sequence[str] = ()) -> pa.Schema:
    """The parquet schema of a source table (keys, features, event/created timestamps)."""
    if table not in FEATURES:
        raise ValueError(f"unknown feature table {table!r}; known: {TABLES}")
    fields = [pa.field(k, _STR) for k in KEYS[table]]
    if table == "user_profile":
        fields += [pa.field(c, _STR) for c in profile_columns]
    fields += [pa.field(n, t) for n, t in FEATURES[table].items()]
    fields += [pa.field(c, TIMESTAMP) for c in RESERVED]
    return pa.schema(fields)


# ----------------------------------------------------------------------------------------------- helpers
def _require(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; has {list(frame.columns)}")


def _string_ids(values: pd.Series, name: str, column: str) -> np.ndarray:
    """Object array of str; anything else (ints, None/NaN) raises ValueError naming the column."""
    arr = values.to_numpy(dtype=object)
    if len(arr) and pd.api.types.infer_dtype(arr, skipna=False) != "string":  # one C-level pass
        is_str = np.fromiter((isinstance(v, str) for v in arr), bool, len(arr))  # only on the error path
        bad = arr[~is_str][:3].tolist()
        raise ValueError(f"{name}.{column} must hold strings, got e.g. {bad!r} ({type(bad[0]).__name__})")
    return arr


def _to_utc(micros: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(micros, dtype=np.int64).astype("datetime64[us]")).tz_localize("UTC")


def _as_of(value) -> pd.Timestamp:
    """None -> epoch; int/float -> Unix seconds; str/datetime -> parsed (naive = UTC); floored to microseconds."""
    if value is None:
        return EPOCH
    if isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, bool):
        ts = pd.Timestamp(int(value), unit="s", tz="UTC")
    else:
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us")


def _list_column(values: pa.Array, offsets: np.ndarray) -> pd.Series:
    """A pandas column (ArrowDtype list) whose row i is values[offsets[i]:offsets[i+1]]."""
    arr = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values)
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


def _windows(group_start: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows over rows sorted by group: row i -> rows [max(g_i, i - n + 1), i].

    Returns (offsets [R+1], flat row index [sum len]) for :func:`_list_column`."""
    pos = np.arange(len(group_start), dtype=np.int64)
    start = np.maximum(group_start, pos - n + 1)
    length = pos + 1 - start
    offsets = np.zeros(len(pos) + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    idx = np.repeat(start - offsets[:-1], length) + np.arange(offsets[-1], dtype=np.int64)
    return offsets, idx


def _group_start(keys: list[np.ndarray]) -> np.ndarray:
    """For rows sorted by ``keys``: the index of the first row of each row's group."""
    n = len(keys[0])
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


class _Log:
    """The interaction log sorted per user by (timestamp, row order), with integer codes and event micros."""

    def __init__(self, log: pd.DataFrame, name: str = "interaction_log") -> None:
        _require(log, name, ("user_id", "item_id", "timestamp", "scenario"))
        if log.empty:
            raise ValueError(f"{name} is empty")
        users = _string_ids(log["user_id"], name, "user_id")
        items = _string_ids(log["item_id"], name, "item_id")
        scen = _string_ids(log["scenario"], name, "scenario")
        ts = log["timestamp"]
        if not pd.api.types.is_integer_dtype(ts):
            raise ValueError(f"{name}.timestamp must be int64 Unix seconds, got dtype {ts.dtype}")
        ts = ts.to_numpy(dtype=np.int64)
        action = log["action"].to_numpy(dtype=object) if "action" in log else np.full(len(log), "click", object)
        query = log["query"].fillna("").to_numpy(dtype=object) if "query" in log else np.full(len(log), "", object)

        ucode, self.user_names = pd.factorize(users, sort=True)
        order = np.lexsort((np.arange(len(ts)), ts, ucode))  # stable: ties keep the row order
        self.ucode = ucode[order]
        self.users = users[order]
        self.items = items[order]
        self.scenarios = scen[order]
        self.seconds = ts[order]
        self.actions = action[order]
        self.queries = query[order]
        self.user_start = _group_start([self.ucode])
        tie_rank = np.arange(len(ts)) - _group_start([self.ucode, self.seconds])
        if len(tie_rank) and tie_rank.max() >= US:
            raise ValueError(f"{name}: a user has >= {US} interactions in one second; cannot order them")
        self.micros = self.seconds * US + tie_rank
        # string columns as (codes, pyarrow dictionary): list columns are then built with one C-level take
        self.item_code, names = pd.factorize(self.items)
        self.item_dict = pa.array(np.asarray(names, dtype=object), pa.string())
        self.action_code, names = pd.factorize(self.actions.astype(str))
        self.action_dict = pa.array(np.asarray(names, dtype=object), pa.string())
        self.scenario_code, names = pd.factorize(self.scenarios)
        self.scenario_dict = pa.array(np.asarray(names, dtype=object), pa.string())

    def __len__(self) -> int:
        return len(self.items)


def _sid_matrix(item_sids: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """(item index, int64 codes [n_items, L+1]) from columns sid_0..sid_L (in level order)."""
    _require(item_sids, "item_semantic_ids", ("item_id", "sid_0"))
    cols = sorted((c for c in item_sids.columns if c.startswith(SID_PREFIX) and c[4:].isdigit()), key=lambda c: int(c[4:]))
    if cols != [f"{SID_PREFIX}{i}" for i in range(len(cols))]:
        raise ValueError(f"item_semantic_ids: SID columns must be sid_0..sid_L without gaps, got {cols}")
    ids = _string_ids(item_sids["item_id"], "item_semantic_ids", "item_id")
    index = pd.Index(ids)
    if not index.is_unique:
        raise ValueError("item_semantic_ids.item_id has duplicates")
    codes = item_sids[cols]
    if not all(pd.api.types.is_integer_dtype(t) for t in codes.dtypes):
        raise ValueError(f"item_semantic_ids: {cols} must be integer columns, got {list(codes.dtypes)}")
    return index, codes.to_numpy(dtype=np.int64)


def _take(dictionary: pa.Array, codes: np.ndarray) -> pa.Array:
    return dictionary.take(pa.array(codes, pa.int64()))


def _lookup(index: pd.Index, ids: np.ndarray, what: str) -> np.ndarray:
    pos = index.get_indexer(ids)
    if (pos < 0).any():
        missing = pd.unique(ids[pos < 0])
        raise ValueError(f"{len(missing)} item_id(s) of the interaction log have no {what}, e.g. {missing[:5].tolist()}")
    return pos


def _stamp(frame: pd.DataFrame, micros: np.ndarray) -> pd.DataFrame:
    stamp = _to_utc(micros)
    frame["event_timestamp"] = stamp
    frame["created_timestamp"] = stamp
    return frame


# ----------------------------------------------------------------------------------------------- tables
def event_micros(log: pd.DataFrame) -> pd.DataFrame:
    """The log sorted per user by (timestamp, row order) with its ``event_micros`` (see module docstring)."""
    lg = _Log(log)
    return pd.DataFrame({"user_id": lg.users, "item_id": lg.items, "scenario": lg.scenarios,
                         "timestamp": lg.seconds, "event_micros": lg.micros})


def user_profile_table(users: pd.DataFrame, as_of=None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per user: every profile column (or only ``columns``) as a string ("" for missing; list-likes
    joined with ","), plus ``profile_fields`` = Array(String) of ``"column=value"`` tokens for non-empty
    values (a dataset-independent form for profile tokens). Stamped ``as_of``."""
    _require(users, "users", ("user_id",))
    ids = _string_ids(users["user_id"], "users", "user_id")
    if not pd.Index(ids).is_unique:
        raise ValueError("users.user_id has duplicates")
    cols = [c for c in users.columns if c != "user_id"] if columns is None else list(columns)
    _require(users, "users", cols)
    bad = [c for c in cols if c in RESERVED or c == "profile_fields" or not str(c).isidentifier()]
    if bad:
        raise ValueError(f"users: profile column names must be identifiers and not {RESERVED + ('profile_fields',)}, got {bad}")
    out = pd.DataFrame({"user_id": ids})
    tokens = []
    for c in cols:  # a loop over the (few) profile columns, vectorized over users
        col = users[c]
        listy = col.map(lambda v: isinstance(v, (list, tuple, np.ndarray)))
        text = col.astype(object).where(col.notna() | listy, "")
        text = text.where(~listy, col[listy].map(lambda v: ",".join(map(str, v)))).astype(str)
        out[c] = text.to_numpy(dtype=object)
        tokens.append(np.where(text.to_numpy() == "", None, c + "=" + text.to_numpy(dtype=object)))
    tok = np.stack(tokens, 1) if tokens else np.empty((len(ids), 0), dtype=object)
    keep = tok != None  # noqa: E711 (elementwise)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(keep.sum(1), out=offsets[1:])
    out["profile_fields"] = _list_column(pa.array(tok[keep].astype(str), pa.string()), offsets)
    t = _as_of(as_of)
    out["event_timestamp"] = t
    out["created_timestamp"] = t
    return out


def short_term_table(log: pd.DataFrame, item_sids: pd.DataFrame, n_short: int = 20) -> pd.DataFrame:
    """One row per interaction: the (user, scenario) state after it (see module docstring)."""
    if n_short < 1:
        raise ValueError(f"n_short must be >= 1, got {n_short}")
    lg = _Log(log)
    index, codes = _sid_matrix(item_sids)
    item_pos = _lookup(index, lg.items, "semantic ID")
    n_codes = codes.shape[1]
    # group rows by (user, scenario), keeping time order inside each group (stable)
    scode = pd.factorize(lg.scenarios, sort=True)[0]
    order = np.lexsort((np.arange(len(lg)), scode, lg.ucode))
    offsets, idx = _windows(_group_start([lg.ucode[order], scode[order]]), n_short)
    rows = order[idx]  # original (sorted-log) rows of every window entry
    frame = pd.DataFrame({"user_id": lg.users[order], "scenario": lg.scenarios[order]})
    frame["short_item_ids"] = _list_column(_take(lg.item_dict, lg.item_code[rows]), offsets)
    frame["short_sids"] = _list_column(pa.array(codes[item_pos[rows]].reshape(-1), pa.int64()), offsets * n_codes)
    frame["short_actions"] = _list_column(_take(lg.action_dict, lg.action_code[rows]), offsets)
    frame["short_len"] = np.diff(offsets)
    return _stamp(frame, lg.micros[order])


def long_term_table(log: pd.DataFrame, n_long: int = 100) -> pd.DataFrame:
    """One row per interaction: the user's last ``n_long`` items over all scenarios after it."""
    if n_long < 1:
        raise ValueError(f"n_long must be >= 1, got {n_long}")
    lg = _Log(log)
    offsets, idx = _windows(lg.user_start, n_long)
    frame = pd.DataFrame({"user_id": lg.users})
    frame["long_item_ids"] = _list_column(_take(lg.item_dict, lg.item_code[idx]), offsets)
    frame["long_scenarios"] = _list_column(_take(lg.scenario_dict, lg.scenario_code[idx]), offsets)
    frame["long_len"] = np.diff(offsets)
    return _stamp(frame, lg.micros)


def item_features_table(items: pd.DataFrame, item_sids: pd.DataFrame, log: pd.DataFrame, as_of=None) -> pd.DataFrame:
    """Per item: ``sid_codes`` (Array(Int64), L+1), ``category``, ``price`` (float, NaN = unknown) and the
    cumulative popularity snapshots of the module docstring (``popularity_count``, ``popularity_log``).
    Items of ``items`` without semantic IDs raise ValueError (every catalog item must be tokenized)."""
    _require(items, "items", ("item_id", "category"))
    ids = _string_ids(items["item_id"], "items", "item_id")
    if not pd.Index(ids).is_unique:
        raise ValueError("items.item_id has duplicates")
    index, codes = _sid_matrix(item_sids)
    pos = index.get_indexer(ids)
    if (pos < 0).any():
        raise ValueError(f"{int((pos < 0).sum())} item(s) have no semantic ID, e.g. {ids[pos < 0][:5].tolist()}")
    price = pd.to_numeric(items["price"], errors="coerce").to_numpy(np.float64) if "price" in items else np.full(len(ids), np.nan)
    category = items["category"].fillna("").astype(str).to_numpy(dtype=object)

    lg = _Log(log)
    item_of_event = _lookup(pd.Index(ids), lg.items, "row in items")
    day = lg.seconds // DAY
    # count per (item, day), then the cumulative count per item in day order
    per = pd.DataFrame({"item": item_of_event, "day": day}).groupby(["item", "day"], sort=True).size()
    item_rows = per.index.get_level_values(0).to_numpy()
    day_rows = per.index.get_level_values(1).to_numpy()
    cum = per.groupby(level=0).cumsum().to_numpy()

    start = _as_of(as_of)
    start_us = int(start.value // 1000)
    if len(day_rows) and (day_rows.min() + 1) * DAY * US <= start_us:
        raise ValueError(f"item_features_table: as_of {start} must be before the end of the first log day")
    rows = np.concatenate([np.arange(len(ids)), item_rows])
    count = np.concatenate([np.zeros(len(ids), np.int64), cum]).astype(np.int64)
    micros = np.concatenate([np.full(len(ids), start_us, np.int64), (day_rows + 1) * DAY * US])
    n_codes = codes.shape[1]
    offsets = np.arange(len(rows) + 1, dtype=np.int64) * n_codes
    frame = pd.DataFrame({"item_id": ids[rows]})
    frame["sid_codes"] = _list_column(pa.array(codes[pos[rows]].reshape(-1), pa.int64()), offsets)
    frame["category"] = category[rows]
    frame["price"] = price[rows]
    frame["popularity_count"] = count
    frame["popularity_log"] = np.log1p(count).astype(np.float64)
    return _stamp(frame, micros)


def _embedding_matrix(values, n: int, what: str, dim: int | None) -> np.ndarray:
    """[n, d] float32 from a 2-D array or a sequence of equal-length vectors; checks d (if given) and finiteness."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        mat = values
    else:
        vals = list(values)
        if n and not all(isinstance(v, (list, tuple, np.ndarray)) for v in vals):
            raise ValueError(f"{what}: every embedding must be a list/array of floats")
        lengths = {len(v) for v in vals}
        if len(lengths) > 1:
            raise ValueError(f"{what}: embeddings must all have the same length, got lengths {sorted(lengths)[:5]}")
        mat = np.asarray(vals, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, dim or 0))
    mat = np.asarray(mat, dtype=np.float32)
    if mat.shape[0] != n:
        raise ValueError(f"{what}: expected {n} embeddings, got {mat.shape[0]}")
    if dim is not None and mat.shape[1] != dim:
        raise ValueError(f"{what}: embeddings must be {dim}-d, got {mat.shape[1]}-d")
    if not np.isfinite(mat).all():
        raise ValueError(f"{what}: embeddings contain NaN/inf")
    return mat


def _float_list(mat: np.ndarray) -> pd.Series:
    offsets = np.arange(mat.shape[0] + 1, dtype=np.int64) * mat.shape[1]
    return _list_column(pa.array(mat.reshape(-1), pa.float32()), offsets)


def scenario_instruction_table(texts: Mapping[str, str], embeddings, as_of=None, dim: int | None = 384) -> pd.DataFrame:
    """One row per scenario: ``scenario_text``, ``scenario_embedding`` (Array(Float32)). ``embeddings`` is a
    mapping scenario -> vector or an array [len(texts), d] in the order of ``texts``."""
    if not isinstance(texts, Mapping) or not texts:
        raise ValueError("scenario texts must be a non-empty mapping scenario -> instruction text")
    names = list(texts)
    bad = [s for s in names if not isinstance(s, str) or not isinstance(texts[s], str)]
    if bad:
        raise ValueError(f"scenario texts: names and texts must be strings, bad entries for {bad}")
    if isinstance(embeddings, Mapping):
        missing = [s for s in names if s not in embeddings]
        if missing:
            raise ValueError(f"scenario embeddings missing for {missing}")
        embeddings = [np.asarray(embeddings[s]) for s in names]
    mat = _embedding_matrix(embeddings, len(names), "scenario embeddings", dim)
    frame = pd.DataFrame({"scenario": np.asarray(names, dtype=object), "scenario_text": [texts[s] for s in names]})
    frame["scenario_embedding"] = _float_list(mat)
    t = _as_of(as_of)
    frame["event_timestamp"] = t
    frame["created_timestamp"] = t
    return frame


def _unix_micros(col: pd.Series, what: str) -> np.ndarray:
    """Unix seconds (int/float) or datetimes (naive = UTC) -> int64 microseconds."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        if col.isna().any():
            raise ValueError(f"{what} has missing values")
        return np.round(col.to_numpy(np.float64) * US).astype(np.int64)
    try:
        ts = pd.to_datetime(col, utc=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be Unix seconds or timestamps, got e.g. {col.iloc[:2].tolist()}") from err
    if ts.isna().any():
        raise ValueError(f"{what} has missing values")
    return ((ts.dt.floor("us") - EPOCH) // pd.Timedelta(1, "us")).to_numpy(dtype=np.int64)


def reasoning_instruction_table(instructions: pd.DataFrame, dim: int | None = 384) -> pd.DataFrame:
    """One row per generated instruction, stamped ``generated_at`` (``generated_at`` kept as Int64 Unix s).
    Duplicate (user, generated_at) rows keep the last one."""
    _require(instructions, "instructions", ("user_id", "instruction_text", "instruction_embedding", "generated_at"))
    ids = _string_ids(instructions["user_id"], "instructions", "user_id")
    text = instructions["instruction_text"].fillna("").astype(str).to_numpy(dtype=object)
    version = (instructions["generator_version"].fillna("").astype(str).to_numpy(dtype=object)
               if "generator_version" in instructions else np.full(len(ids), "", dtype=object))
    micros = _unix_micros(instructions["generated_at"], "instructions.generated_at")
    emb = _embedding_matrix(instructions["instruction_embedding"].to_numpy(dtype=object)
                            if len(instructions) else [], len(ids), "instructions.instruction_embedding", dim)
    keep = ~pd.DataFrame({"u": ids, "t": micros}).duplicated(keep="last").to_numpy()
    frame = pd.DataFrame({"user_id": ids[keep], "instruction_text": text[keep], "generator_version": version[keep]})
    frame["instruction_embedding"] = _float_list(emb[keep])
    frame["generated_at"] = micros[keep] // US
    return _stamp(frame, micros[keep])


def training_entities(log: pd.DataFrame, split: str | Sequence[str] | None = None, min_interactions: int = 3) -> pd.DataFrame:
    """The entity frame for point-in-time retrieval: one row per target interaction (see module docstring).

    Columns: ``user_id``, ``scenario``, ``item_id`` (the target), ``event_timestamp`` (= target time - 1 us),
    ``target_timestamp`` (Unix s), ``action``, ``query`` (request context, known at request time),
    ``position`` (0-based index of the target in the user's history) and ``split``. ``split`` selects labels
    (one name or several; None = all rows)."""
    if min_interactions < 3:
        raise ValueError(f"min_interactions must be >= 3 (train, valid, test), got {min_interactions}")
    wanted = SPLITS if split is None else ((split,) if isinstance(split, str) else tuple(split))
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown:
        raise ValueError(f"split must be among {SPLITS}, got {unknown}")
    lg = _Log(log)
    n = len(lg)
    position = np.arange(n) - lg.user_start
    size = np.bincount(lg.ucode, minlength=len(lg.user_names))[lg.ucode]
    from_end = size - 1 - position
    eligible = size >= min_interactions
    labels = np.where(eligible & (from_end == 0), "test", np.where(eligible & (from_end == 1), "valid", "train"))
    frame = pd.DataFrame({
        "user_id": lg.users,
        "scenario": lg.scenarios,
        "item_id": lg.items,
        "event_timestamp": _to_utc(lg.micros - 1),
        "target_timestamp": lg.seconds,
        "action": lg.actions,
        "query": lg.queries,
        "position": position.astype(np.int64),
        "split": labels.astype(object),
    })
    return frame[np.isin(labels, wanted)].reset_index(drop=True)


def instruction_age_days(frame: pd.DataFrame) -> np.ndarray:
    """Float64[N]: days from each row's ``generated_at`` (instruction, Unix s) to its ``target_timestamp`` (the
    example's time, Unix s); NaN where either is missing (no such column, or no instruction)."""
    if "generated_at" not in frame or "target_timestamp" not in frame:
        return np.full(len(frame), np.nan)
    made = pd.to_numeric(frame["generated_at"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    at = pd.to_numeric(frame["target_timestamp"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return (at - made) / DAY


def instruction_coverage(frame: pd.DataFrame) -> dict[str, float]:
    """Share of training-frame rows that carry a reasoning instruction, overall and per split (rows are
    targets with at least one earlier event of the user), plus the median instruction age in days."""
    _require(frame, "training frame", ("has_instruction", "split"))
    has = frame["has_instruction"].to_numpy(dtype=bool)
    out = {"all": float(has.mean()) if len(has) else 0.0}
    for split in SPLITS:
        part = has[frame["split"].to_numpy() == split]
        out[split] = float(part.mean()) if len(part) else 0.0
    if "generated_at" in frame and "target_timestamp" in frame and has.any():
        out["median_age_days"] = float(np.nanmedian(instruction_age_days(frame)[has]))
    return out


def source_tables(
    interaction_log: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    item_sids: pd.DataFrame,
    scenario_texts: Mapping[str, str],
    scenario_embeddings,
    instructions: Sequence[pd.DataFrame],
    *,
    n_short: int,
    n_long: int,
    profile_columns: Sequence[str],
    popularity_log: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every Feast source table (:data:`TABLES`) from the pipeline's frames. ``popularity_log`` (default: the
    interaction log) is what item popularity is counted on: pass the training events to keep held-out events
    out of every fitted statistic."""
    parts = [f for f in instructions if len(f)]
    made = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["user_id", "instruction_text", "instruction_embedding", "generated_at"])
    return {
        "user_profile": user_profile_table(users, columns=profile_columns),
        "user_short_term": short_term_table(interaction_log, item_sids, n_short=n_short),
        "user_long_term": long_term_table(interaction_log, n_long=n_long),
        "item_features": item_features_table(items, item_sids, interaction_log if popularity_log is None
                                             else popularity_log),
        "scenario_instruction": scenario_instruction_table(scenario_texts, scenario_embeddings),
        "reasoning_instruction": reasoning_instruction_table(made),
    }
