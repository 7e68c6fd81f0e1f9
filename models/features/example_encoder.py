"""Point-in-time training frame -> the generator's batch dict (numpy / pyarrow / torch; no Lightning, so serving
can import it).

Input: the frame of ``historical_features(..., service="training")`` (feature_repo/README.md), one row per
target interaction, or the online features of a serving request. List columns may hold lists, numpy arrays,
pyarrow lists or None (= empty).

:class:`ExampleEncoder` is fitted on the **train** split and maps a frame to the batch dict of
:class:`models.nn.OxygenGenerator` (B rows, L+1 codes per item):

    scenario         Long[B]          index of the row's scenario in ``scenarios`` (unknown -> ValueError)
    profile          Long[B, P]       column j = profile field ``fields[j]`` (P = len(fields) <= max_profile_fields)
    instruction_emb  Float[B, 384]    ``instruction_embedding``; zeros where missing
    has_instruction  Bool[B]          embedding present (and the frame's ``has_instruction``, if any)
    instruction_age  Float[B]         days from ``generated_at`` to ``target_timestamp`` (the example's time; online
                                        rows get the request time, models/export/version_client.py), clamped at 0;
                                        -1 (models/nn/instruction_age.NO_AGE) without instruction or either column
    short_sids       Long[B, S, L+1]  ``short_sids`` (flattened, oldest first) reshaped and REVERSED: slot 0 = most
    short_mask       Bool[B, S]         recent; the last ``max_short`` items are kept; S = longest row (<= max_short)
    long_sids        Long[B, M, L+1]  ``long_item_ids`` mapped through the SemanticIdTable (unknown items dropped,
    long_mask        Bool[B, M]         then the last ``max_long`` kept), reversed like the short history
    target_sids      Long[B, L+1]     ``sid_codes`` (the label; empty -> the table's codes of ``item_id``)
    target_item      Long[B]          row of the target in the SemanticIdTable (= trie item index), -1 if unknown

Profile vocabulary (ids into ``GeneratorConfig.profile_vocab_size = encoder.profile_vocab_size``)::

    0                    padding (field missing for the row)
    1 .. F               per-field OOV token "<field>=<unk>" (value not seen in train, or seen < min_count times)
    F+1 ..               known "field=value" tokens, sorted

Tokens are split at the first "="; a token without "=" is a field with an empty value. Fields are the
``max_profile_fields`` most frequent field names of the train split (ties by name), placed in name order, so a
field always lands in the same position (the generator adds one field embedding per position). Tokens of other
fields are dropped.

Ragged lists become padded arrays without a per-row Python loop: pyarrow flattens a list column into
(values, lengths), and row r, slot j (most recent first) reads ``values[off_r + len_r - 1 - j]`` for
``j < min(len_r, max)``, with ``off`` the exclusive cumsum of ``len``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from models.artifacts import atomic_write_json
from models.features.tables import instruction_age_days
from models.nn.config import GeneratorConfig
from models.nn.instruction_age import NO_AGE
from models.semantic_ids.codebook import SemanticIdTable

__all__ = ["BATCH_KEYS", "EncoderConfig", "ExampleEncoder"]

FORMAT = "oxyrec.example_encoder"
FORMAT_VERSION = 1
PAD, OOV = "<pad>", "<unk>"
SPLITS = ("train", "valid", "test")
TRAIN_POSITIONS = ("last", "all")
BATCH_KEYS = ("scenario", "profile", "instruction_emb", "has_instruction", "instruction_age", "short_sids",
              "short_mask", "long_sids", "long_mask", "target_sids", "target_item")
REQUIRED = ("scenario", "profile_fields", "short_sids", "long_item_ids")


@dataclass(frozen=True)
class EncoderConfig:
    max_short: int = 20  # = GeneratorConfig.max_short
    max_long: int = 100  # = GeneratorConfig.max_long
    max_profile_fields: int = 8  # = GeneratorConfig.n_profile_fields
    instruction_dim: int = 384
    min_count: int = 1  # profile values seen fewer times in train map to the field's OOV id

    def __post_init__(self) -> None:
        for name in ("max_short", "max_long", "max_profile_fields", "instruction_dim", "min_count"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_generator(cls, cfg: GeneratorConfig, min_count: int = 1) -> "EncoderConfig":
        return cls(cfg.max_short, cfg.max_long, cfg.n_profile_fields, cfg.instruction_dim, min_count)


# ----------------------------------------------------------------------------------------------- ragged lists
def _ragged(frame: pd.DataFrame, column: str, value_type: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths int64) of a list column; None/NaN rows are empty."""
    col = frame[column]
    try:
        if isinstance(col.dtype, pd.ArrowDtype):
            arr = pa.chunked_array(col.array._pa_array).combine_chunks().cast(pa.list_(value_type))
        else:
            arr = pa.array(col.to_numpy(dtype=object), type=pa.list_(value_type), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise ValueError(f"frame column {column!r} must hold lists of {value_type} (or None): {e}") from e
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(arr)
    if values.null_count:
        raise ValueError(f"frame column {column!r} has null entries inside its lists")
    return values.to_numpy(zero_copy_only=False), lengths


def _recent_first(lengths: np.ndarray, width_cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions [B, W] of the most recent ``W`` list entries, newest first, and the mask [B, W].

    W = min(width_cap, longest row); entries outside the mask point at position 0 (callers mask them)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, np.int64)
    width = int(min(width_cap, lengths.max(initial=0)))
    j = np.arange(width)[None, :]
    mask = j < lengths[:, None]
    idx = np.where(mask, offsets[:, None] + lengths[:, None] - 1 - j, 0)
    return idx, mask


def _gather_codes(codes: np.ndarray, idx: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """codes [N, L+1] gathered at idx [B, W] -> Long[B, W, L+1], zeros where ~mask."""
    if codes.shape[0] == 0:
        return torch.zeros(*idx.shape, codes.shape[1], dtype=torch.long)
    out = codes[idx]
    out[~mask] = 0
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.int64))


# ----------------------------------------------------------------------------------------------- encoder
class ExampleEncoder:
    """Vocabularies fitted on the train split; ``encode(frame)`` gives the generator's batch dict."""

    def __init__(
        self,
        scenarios: Sequence[str],
        fields: Sequence[str],
        tokens: Sequence[str],
        sid_table: SemanticIdTable,
        config: EncoderConfig = EncoderConfig(),
    ) -> None:
        self.scenarios = tuple(str(s) for s in scenarios)
        self.fields = tuple(str(f) for f in fields)
        self.tokens = tuple(str(t) for t in tokens)
        self.sid_table = sid_table
        self.config = config
        if not self.scenarios or len(set(self.scenarios)) != len(self.scenarios):
            raise ValueError(f"scenarios must be a non-empty list of unique names, got {list(self.scenarios)}")
        if len(self.fields) > config.max_profile_fields:
            raise ValueError(f"{len(self.fields)} profile fields exceed max_profile_fields={config.max_profile_fields}")
        expected = (PAD, *(f"{f}={OOV}" for f in self.fields))
        if self.tokens[: len(expected)] != expected:
            raise ValueError("profile tokens must start with <pad> and one '<field>=<unk>' token per field, in field order")
        self._scenario_index = pd.Index(self.scenarios)
        self._field_index = pd.Index(self.fields)
        self._token_index = pd.Index(self.tokens)
        if not self._token_index.is_unique:
            raise ValueError("profile tokens must be unique")
        self._oov_ids = np.arange(1, len(self.fields) + 1, dtype=np.int64)  # OOV id of field j = j + 1

    # -------------------------------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        sid_table: SemanticIdTable,
        scenarios: Sequence[str],
        config: EncoderConfig = EncoderConfig(),
    ) -> "ExampleEncoder":
        """Profile vocabulary from ``train`` (the train split only: no valid/test leakage)."""
        if not isinstance(train, pd.DataFrame):
            raise ValueError(f"train must be a pandas DataFrame, got {type(train).__name__}")
        if "profile_fields" not in train.columns:
            raise ValueError(f"train frame is missing column 'profile_fields'; has {list(train.columns)}")
        if train.empty:
            raise ValueError("train frame is empty: nothing to fit the encoder on")
        flat, _ = _ragged(train, "profile_fields", pa.string())
        toks = pd.Series(flat.astype(object), dtype=object)
        field = toks.str.split("=", n=1).str[0]
        field_counts = field.value_counts()
        # most frequent fields first, ties by name; then positions in name order
        ranked = sorted(field_counts.items(), key=lambda kv: (-kv[1], kv[0]))[: config.max_profile_fields]
        fields = sorted(f for f, _ in ranked)
        counts = toks[field.isin(fields).to_numpy()].value_counts()
        known = sorted(t for t, c in counts.items() if c >= config.min_count and not t.endswith(f"={OOV}"))
        tokens = [PAD, *(f"{f}={OOV}" for f in fields), *known]
        return cls(scenarios, fields, tokens, sid_table, config)

    # -------------------------------------------------------------------------------------- properties
    @property
    def n_levels(self) -> int:
        return int(self.sid_table.codes.shape[1])

    @property
    def profile_vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def n_profile_fields(self) -> int:
        return max(1, len(self.fields))

    def generator_config(self, base: GeneratorConfig = GeneratorConfig()) -> GeneratorConfig:
        """``base`` with the data-determined fields set: vocab_sizes (the SID table's), n_scenarios,
        profile_vocab_size, n_profile_fields, max_short/max_long/instruction_dim (the encoder's)."""
        c = self.config
        return replace(
            base,
            vocab_sizes=tuple(int(v) for v in self.sid_table.vocab_sizes),
            n_scenarios=len(self.scenarios),
            profile_vocab_size=self.profile_vocab_size,
            n_profile_fields=self.n_profile_fields,
            max_short=c.max_short,
            max_long=c.max_long,
            instruction_dim=c.instruction_dim,
        )

    def check_config(self, cfg: GeneratorConfig) -> None:
        """ValueError if a model with ``cfg`` cannot read this encoder's batches."""
        problems = []
        if tuple(cfg.vocab_sizes) != tuple(self.sid_table.vocab_sizes):
            problems.append(f"vocab_sizes {cfg.vocab_sizes} != SID table {self.sid_table.vocab_sizes}")
        if cfg.n_scenarios < len(self.scenarios):
            problems.append(f"n_scenarios {cfg.n_scenarios} < {len(self.scenarios)} scenarios")
        if cfg.profile_vocab_size < self.profile_vocab_size:
            problems.append(f"profile_vocab_size {cfg.profile_vocab_size} < encoder vocabulary {self.profile_vocab_size}")
        if cfg.n_profile_fields < len(self.fields):
            problems.append(f"n_profile_fields {cfg.n_profile_fields} < {len(self.fields)} fields")
        for name in ("max_short", "max_long", "instruction_dim"):
            if getattr(cfg, name) < getattr(self.config, name):
                problems.append(f"{name} {getattr(cfg, name)} < encoder {getattr(self.config, name)}")
        if problems:
            raise ValueError("generator config does not fit the example encoder: " + "; ".join(problems))

    # -------------------------------------------------------------------------------------- encode
    def encode(self, frame: pd.DataFrame, targets: bool = True) -> dict[str, torch.Tensor]:
        """The batch dict of the module docstring for every row of ``frame`` (``targets=False``: no
        target_sids/target_item, e.g. for serving requests)."""
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in REQUIRED if c not in frame.columns]
        if targets and "sid_codes" not in frame.columns and "item_id" not in frame.columns:
            missing.append("sid_codes/item_id")
        if missing:
            raise ValueError(f"frame is missing column(s) {missing}; has {list(frame.columns)}")
        b, c = len(frame), self.config
        out = {"scenario": self._scenarios(frame), "profile": self._profile(frame)}
        out["instruction_emb"], out["has_instruction"] = self._instruction(frame)
        out["instruction_age"] = self._instruction_age(frame, out["has_instruction"].numpy())
        out["short_sids"], out["short_mask"] = self._short(frame)
        out["long_sids"], out["long_mask"] = self._long(frame)
        if targets:
            out["target_sids"], out["target_item"] = self._targets(frame)
        assert all(v.shape[0] == b for v in out.values())
        assert out["short_sids"].shape[1] <= c.max_short and out["long_sids"].shape[1] <= c.max_long
        return out

    def _scenarios(self, frame: pd.DataFrame) -> torch.Tensor:
        names = frame["scenario"].to_numpy(dtype=object)
        idx = self._scenario_index.get_indexer(names)
        if (idx < 0).any():
            bad = sorted({str(s) for s in names[idx < 0]})[:5]
            raise ValueError(f"frame.scenario has unknown scenario(s) {bad}; known: {list(self.scenarios)}")
        return torch.from_numpy(idx.astype(np.int64))

    def _profile(self, frame: pd.DataFrame) -> torch.Tensor:
        flat, lengths = _ragged(frame, "profile_fields", pa.string())
        out = np.zeros((len(frame), len(self.fields)), dtype=np.int64)
        if flat.size and self.fields:
            toks = pd.Series(flat.astype(object), dtype=object)
            col = self._field_index.get_indexer(toks.str.split("=", n=1).str[0].to_numpy(dtype=object))
            tok = self._token_index.get_indexer(toks.to_numpy(dtype=object))
            row = np.repeat(np.arange(len(frame)), lengths)
            keep = col >= 0  # tokens of fields outside the vocabulary are dropped
            ids = np.where(tok > 0, tok, self._oov_ids[np.maximum(col, 0)])  # unknown value -> field OOV
            out[row[keep], col[keep]] = ids[keep]
        return torch.from_numpy(out)

    def _instruction(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        dim, b = self.config.instruction_dim, len(frame)
        emb = np.zeros((b, dim), dtype=np.float32)
        has = np.zeros(b, dtype=bool)
        if "instruction_embedding" in frame.columns:
            flat, lengths = _ragged(frame, "instruction_embedding", pa.float32())
            bad = (lengths != 0) & (lengths != dim)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise ValueError(f"frame.instruction_embedding row {r} has {lengths[r]} values, expected {dim} (or None)")
            has = lengths == dim
            emb[has] = flat.reshape(-1, dim)
            if not np.isfinite(emb).all():
                raise ValueError("frame.instruction_embedding has NaN/inf values")
        if "has_instruction" in frame.columns:
            flag = frame["has_instruction"].fillna(False).to_numpy(dtype=bool)
            has &= flag
            emb[~has] = 0.0
        return torch.from_numpy(emb), torch.from_numpy(has)

    @staticmethod
    def _instruction_age(frame: pd.DataFrame, has: np.ndarray) -> torch.Tensor:
        """Float[B] days (module docstring); an instruction stamped after the example (clock skew) counts as new."""
        age = instruction_age_days(frame)
        known = has & np.isfinite(age)
        return torch.from_numpy(np.where(known, np.maximum(age, 0.0), NO_AGE).astype(np.float32))

    def _check_range(self, codes: np.ndarray, what: str) -> None:
        if codes.size == 0:
            return
        vocab = np.asarray(self.sid_table.vocab_sizes)
        bad = (codes < 0) | (codes >= vocab)
        if bad.any():
            r, l = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{what}: code {int(codes[r, l])} at level {l} is outside the SID table vocab {tuple(vocab)}")

    def _short(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        l1 = self.n_levels
        flat, lengths = _ragged(frame, "short_sids", pa.int64())
        if (lengths % l1).any():
            r = int(np.flatnonzero(lengths % l1)[0])
            raise ValueError(f"frame.short_sids row {r} has {lengths[r]} codes, not a multiple of L+1={l1}")
        codes = flat.astype(np.int64).reshape(-1, l1)
        self._check_range(codes, "frame.short_sids")
        idx, mask = _recent_first(lengths // l1, self.config.max_short)
        return _gather_codes(codes, idx, mask), torch.from_numpy(mask)

    def _long(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        flat, lengths = _ragged(frame, "long_item_ids", pa.string())
        pos = self.sid_table._item_index.get_indexer(flat.astype(object)) if flat.size else np.zeros(0, np.int64)
        known = pos >= 0  # items without a semantic ID (e.g. newer than the table) are dropped
        row = np.repeat(np.arange(len(frame)), lengths)
        kept = np.bincount(row[known], minlength=len(frame)).astype(np.int64)
        idx, mask = _recent_first(kept, self.config.max_long)
        return _gather_codes(self.sid_table.codes[pos[known]], idx, mask), torch.from_numpy(mask)

    def _targets(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        l1, b = self.n_levels, len(frame)
        table_pos = np.full(b, -1, dtype=np.int64)
        if "item_id" in frame.columns:
            ids = frame["item_id"].to_numpy(dtype=object)
            table_pos = self.sid_table._item_index.get_indexer(ids.astype(str)).astype(np.int64)
        codes = np.zeros((b, l1), dtype=np.int64)
        given = np.zeros(b, dtype=bool)
        if "sid_codes" in frame.columns:
            flat, lengths = _ragged(frame, "sid_codes", pa.int64())
            bad = (lengths != 0) & (lengths != l1)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise ValueError(f"frame.sid_codes row {r} has {lengths[r]} codes, expected L+1={l1}")
            given = lengths == l1
            codes[given] = flat.astype(np.int64).reshape(-1, l1)
        from_table = ~given & (table_pos >= 0)
        codes[from_table] = self.sid_table.codes[table_pos[from_table]]
        if not (given | from_table).all():
            r = int(np.flatnonzero(~(given | from_table))[0])
            who = frame["item_id"].iloc[r] if "item_id" in frame.columns else "?"
            raise ValueError(f"row {r}: target item {who!r} has no sid_codes and is not in the SID table")
        self._check_range(codes, "frame.sid_codes")
        # the label must be the table's tuple, or the trie (built from the table) cannot produce it
        both = given & (table_pos >= 0)
        mismatch = both & (codes != self.sid_table.codes[np.maximum(table_pos, 0)]).any(1)
        if mismatch.any():
            r = int(np.flatnonzero(mismatch)[0])
            raise ValueError(
                f"row {r}: sid_codes {codes[r].tolist()} of item {frame['item_id'].iloc[r]!r} differ from the SID "
                f"table's {self.sid_table.codes[table_pos[r]].tolist()} ({int(mismatch.sum())} rows): the features "
                "were built with another SID table version"
            )
        # target item index = trie leaf = table row; rows given only as codes are looked up by tuple
        item = table_pos.copy()
        only_codes = given & (table_pos < 0)
        if only_codes.any():
            q = pd.MultiIndex.from_arrays([codes[only_codes, j] for j in range(l1)])
            item[only_codes] = self.sid_table._tuple_index.get_indexer(q)
        return torch.from_numpy(codes), torch.from_numpy(item)

    # -------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "scenarios": list(self.scenarios),
            "fields": list(self.fields),
            "tokens": list(self.tokens),
            "config": asdict(self.config),
            "sid_table": {"n_items": len(self.sid_table), "vocab_sizes": list(self.sid_table.vocab_sizes),
                          "codebook_version": self.sid_table.codebook_version},
        }

    def save(self, path) -> Path:
        return atomic_write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path, sid_table: SemanticIdTable) -> "ExampleEncoder":
        """Read ``save``'s JSON; ValueError naming the file if it is unreadable or was fitted with a SID table
        of another shape/version."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read example encoder {path}: {e}") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{path} is not an example-encoder file (format {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {d.get('format_version')}, this code reads {FORMAT_VERSION}")
        sid = d.get("sid_table", {})
        if list(sid.get("vocab_sizes", [])) != list(sid_table.vocab_sizes):
            raise ValueError(f"{path} was fitted with SID vocab_sizes {sid.get('vocab_sizes')}, the given table has "
                             f"{list(sid_table.vocab_sizes)}")
        if sid.get("codebook_version") and sid_table.codebook_version and sid["codebook_version"] != sid_table.codebook_version:
            raise ValueError(f"{path} was fitted with SID codebook {sid['codebook_version']}, the given table is "
                             f"{sid_table.codebook_version}")
        try:
            return cls(d["scenarios"], d["fields"], d["tokens"], sid_table, EncoderConfig(**d["config"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed example encoder ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------------------------- sequences
