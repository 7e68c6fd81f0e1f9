"""Semantic-ID codebook: a fitted RQ-KMeans quantizer plus the item <-> SID table.

* `SemanticIdCodebook` holds one float32 (K_l, D) centroid matrix per level, the config, a
  `version` (first 12 hex chars of sha256 over the config JSON and the centroid bytes, so the
  same fit gives the same version), `fitted_at` (UTC ISO time, not part of the version), and
  fit-time statistics used by `staleness_report`:
    fit_level_mse[l] = mean_i ||r_{i,l}||^2 (squared residual norm after level l, all fit-call rows)
    fit_usage[l][k]  = number of items whose level-l code is k
    emb_mean, emb_total_var = mean vector and trace of the covariance of the embeddings.
* `assign_semantic_ids(item_ids, codes)` appends a disambiguation code so every item has a
  unique (L+1)-tuple: items sharing all L codes get 0, 1, 2, ... in ascending item_id order.
  The (L+1)-th vocabulary size is max(disambiguation) + 1.
* `SemanticIdCodebook.extend(table, ids, embeddings)` encodes new items with the existing
  codebook; existing items keep their tuples; a new item gets the next free disambiguation
  index in its L-prefix group (max existing + 1, then + rank among the new items by item_id).
* `staleness_report(embeddings, previous_codes=None)`:
    error_increase = mse_now[L-1] / fit_level_mse[L-1] - 1       (final-level quantisation error)
    usage_kl[l]    = KL(p_now || p_fit) with p = (counts + 0.5) / (n + 0.5 K_l)  (smoothed)
    l1_changed_share = mean_i [code_now_{i,0} != previous_codes_{i,0}]  (when previous codes given)
    mean_shift     = ||mean_now - emb_mean|| / sqrt(emb_total_var)        (informational)
  refit_recommended if any of error_increase, max usage_kl, l1_changed_share exceeds its
  threshold in `StalenessConfig`.
* Files: `save(path)` writes `<stem>.npz` (arrays only) and `<stem>.json` (metadata, format
  version, array names); `load(path)` reads both with `np.load(..., allow_pickle=False)` and
  re-checks the version hash, so a corrupt or incompatible pair raises ValueError naming the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import zipfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.artifacts import atomic_write, atomic_write_json

from .rq_kmeans import RQKMeansConfig, as_float32_matrix, fit_rq_kmeans, rq_encode

__all__ = [
    "FORMAT_VERSION",
    "StalenessConfig",
    "SemanticIdCodebook",
    "SemanticIdTable",
    "fit_codebook",
    "fit_encode",
    "assign_semantic_ids",
    "extend_semantic_ids",
]

FORMAT_VERSION = 1
_USAGE_SMOOTHING = 0.5


@dataclass(frozen=True)
class StalenessConfig:
    max_error_increase: float = 0.20  # relative increase of final-level quantisation MSE
    max_usage_kl: float = 0.10  # nats, max over levels
    max_l1_changed_share: float = 0.10  # share of items whose level-1 code moved


def _version_hash(config: RQKMeansConfig, centroids: list[np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for c in centroids:
        h.update(np.ascontiguousarray(c, dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def _kl(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    p = (p_counts + _USAGE_SMOOTHING) / (p_counts.sum() + _USAGE_SMOOTHING * p_counts.size)
    q = (q_counts + _USAGE_SMOOTHING) / (q_counts.sum() + _USAGE_SMOOTHING * q_counts.size)
    return float(np.sum(p * np.log(p / q)))


def _mean_and_total_var(x: torch.Tensor, chunk_size: int) -> tuple[np.ndarray, float]:
    """Mean vector and trace of the covariance, in float64, chunked (no float64 copy of x)."""
    n = x.shape[0]
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for s in range(0, n, chunk_size):
        total += x[s : s + chunk_size].sum(dim=0).double()  # float32 within a chunk, float64 across
    mean = total / n
    mean32 = mean.float()
    var = 0.0
    for s in range(0, n, chunk_size):
        var += float(torch.linalg.vector_norm(x[s : s + chunk_size] - mean32, dim=1).double().square().sum())
    return mean.numpy(), var / n


def _as_item_ids(item_ids, name: str = "item_ids") -> np.ndarray:
    ids = np.asarray(item_ids)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {ids.shape}")
    ids = ids.astype(str)
    return ids


def _check_unique(ids: np.ndarray, name: str) -> None:
    dup = pd.Index(ids).duplicated()
    if dup.any():
        first = ids[dup][:5].tolist()
        raise ValueError(f"{name} has {int(dup.sum())} duplicate id(s), e.g. {first}")


def _as_codes(codes, name: str = "codes", n_cols: int | None = None) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_items, levels), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer, got dtype {arr.dtype}")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ValueError(f"{name} must have {n_cols} columns, got {arr.shape[1]}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} has negative values (min {int(arr.min())})")
    return arr.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- SID table


@dataclass(frozen=True, eq=False)
class SemanticIdTable:
    """Bijection item_id <-> (L+1)-tuple of codes (the last one disambiguates collisions)."""

    item_ids: np.ndarray  # (N,) str
    codes: np.ndarray  # (N, L+1) int64
    codebook_version: str = ""
    level_sizes: tuple[int, ...] = ()  # K_l of the L codebook levels (max+1 when unknown)

    def __post_init__(self) -> None:
        ids = _as_item_ids(self.item_ids)
        codes = _as_codes(self.codes)
        if codes.shape[0] != ids.shape[0]:
            raise ValueError(f"item_ids has {ids.shape[0]} rows but codes has {codes.shape[0]}")
        if codes.shape[1] < 2:
            raise ValueError(f"codes must have >= 2 columns (L codes + disambiguation), got {codes.shape[1]}")
        _check_unique(ids, "item_ids")
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "codes", codes)
        if self._tuple_index.has_duplicates:
            raise ValueError("codes: two items share the same (L+1)-tuple; the table must be a bijection")
        sizes = tuple(int(s) for s in self.level_sizes) or tuple(
            int(codes[:, l].max()) + 1 if len(codes) else 0 for l in range(codes.shape[1] - 1)
        )
        if len(sizes) != codes.shape[1] - 1:
            raise ValueError(f"level_sizes has {len(sizes)} entries, expected {codes.shape[1] - 1}")
        for l, k in enumerate(sizes):
            if len(codes) and codes[:, l].max() >= k:
                raise ValueError(f"codes column sid_{l} has value {int(codes[:, l].max())} >= level size {k}")
        object.__setattr__(self, "level_sizes", sizes)

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def levels(self) -> int:
        """L, the number of codebook levels (the table has L+1 code columns)."""
        return int(self.codes.shape[1] - 1)

    @property
    def disambiguation_size(self) -> int:
        """Vocabulary size of the last (disambiguation) position: max value + 1."""
        return int(self.codes[:, -1].max()) + 1 if len(self) else 0

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Per-position vocabulary sizes: (K_1, ..., K_L, disambiguation_size)."""
        return self.level_sizes + (self.disambiguation_size,)

    @cached_property
    def _item_index(self) -> pd.Index:
        return pd.Index(self.item_ids)

    @cached_property
    def _tuple_index(self) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays([self.codes[:, j] for j in range(self.codes.shape[1])])

    def lookup_codes(self, item_ids) -> np.ndarray:
        """(M, L+1) int64 codes of the given item ids; KeyError naming unknown ids."""
        ids = _as_item_ids(item_ids)
        pos = self._item_index.get_indexer(ids)
        missing = pos < 0
        if missing.any():
            raise KeyError(f"{int(missing.sum())} unknown item id(s), e.g. {ids[missing][:5].tolist()}")
        return self.codes[pos]

    def lookup_items(self, codes) -> np.ndarray:
        """(M,) str item ids of the given (M, L+1) code tuples; KeyError naming unknown tuples."""
        arr = _as_codes(codes, n_cols=self.codes.shape[1])
        query = pd.MultiIndex.from_arrays([arr[:, j] for j in range(arr.shape[1])])
        pos = self._tuple_index.get_indexer(query)
        missing = pos < 0
        if missing.any():
            raise KeyError(
                f"{int(missing.sum())} unknown semantic-id tuple(s), e.g. {arr[missing][:3].tolist()}"
            )
        return self.item_ids[pos]

    def to_frame(self) -> pd.DataFrame:
        """Columns item_id, sid_0 .. sid_L (sid_L is the disambiguation code)."""
        df = pd.DataFrame({"item_id": self.item_ids})
        for j in range(self.codes.shape[1]):
            df[f"sid_{j}"] = self.codes[:, j]
        df.attrs["codebook_version"] = self.codebook_version
        df.attrs["level_sizes"] = list(self.level_sizes)
        return df

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, codebook_version: str | None = None, level_sizes: tuple[int, ...] | None = None
    ) -> "SemanticIdTable":
        """Inverse of `to_frame`. Version / level sizes default to df.attrs (else inferred)."""
        if "item_id" not in df.columns:
            raise ValueError(f"frame has no 'item_id' column (columns: {list(df.columns)})")
        sid_cols = []
        while f"sid_{len(sid_cols)}" in df.columns:
            sid_cols.append(f"sid_{len(sid_cols)}")
        if len(sid_cols) < 2:
            raise ValueError(f"frame needs columns sid_0..sid_L with L >= 1, found {sid_cols}")
        codes = df[sid_cols].to_numpy()
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"columns {sid_cols} must be integer, got dtype {codes.dtype}")
        if codebook_version is None:
            codebook_version = str(df.attrs.get("codebook_version", ""))
        if level_sizes is None:
            level_sizes = tuple(df.attrs.get("level_sizes", ()))
        return cls(df["item_id"].to_numpy(), codes, codebook_version, tuple(level_sizes))


def _disambiguate(prefix_codes: np.ndarray, ids: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Rank of each row within its group of identical L-tuples, ordered by item id (+ start offset)."""
    n, L = prefix_codes.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = [ids] + [prefix_codes[:, j] for j in range(L - 1, -1, -1)]  # lexsort: last key is primary
    order = np.lexsort(keys)
    sorted_codes = prefix_codes[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = np.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)
    pos = np.arange(n)
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = pos - group_start
    if start is not None:
        rank += start
    return rank


def assign_semantic_ids(
    item_ids, codes, codebook_version: str = "", level_sizes: tuple[int, ...] = ()
) -> SemanticIdTable:
    """Append the disambiguation code (0, 1, ... by ascending item_id within each collision group)."""
    ids = _as_item_ids(item_ids)
    c = _as_codes(codes)
    if c.shape[0] != ids.shape[0]:
        raise ValueError(f"item_ids has {ids.shape[0]} rows but codes has {c.shape[0]}")
    _check_unique(ids, "item_ids")
    dis = _disambiguate(c, ids)
    return SemanticIdTable(ids, np.column_stack([c, dis]), codebook_version, tuple(level_sizes))


# ----------------------------------------------------------------------------- codebook


@dataclass(frozen=True, eq=False)
class SemanticIdCodebook:
    centroids: tuple[np.ndarray, ...]  # per level (K_l, D) float32
    config: RQKMeansConfig
    version: str
    fitted_at: str
    dim: int
    fit_level_mse: np.ndarray  # (L,) float64
    fit_usage: tuple[np.ndarray, ...]  # per level (K_l,) int64
    emb_mean: np.ndarray  # (D,) float64
    emb_total_var: float
    n_items_fit: int
    fit_info: dict = field(default_factory=dict)  # n_iter / inertia per level, n_fit rows

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, embeddings, config: RQKMeansConfig = RQKMeansConfig()) -> "SemanticIdCodebook":
        return fit_encode(embeddings, config)[0]

    @property
    def levels(self) -> int:
        return len(self.centroids)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(int(c.shape[0]) for c in self.centroids)

    @cached_property
    def _torch_centroids(self) -> list[torch.Tensor]:
        return [torch.from_numpy(c) for c in self.centroids]

    # -- encode / decode ------------------------------------------------------------------------

    def encode(self, embeddings) -> np.ndarray:
        """(N, L) int64 codes: nearest centroid per level on residuals (vectorised, chunked)."""
        return rq_encode(embeddings, self._torch_centroids, self.config.chunk_size)

    def decode(self, codes, levels: int | None = None) -> np.ndarray:
        """(N, D) float32 reconstruction sum_{l < levels} C_l[codes[:, l]] (default: all levels).

        Extra columns (e.g. the disambiguation code of an (L+1)-tuple) are ignored.
        """
        levels = self.levels if levels is None else levels
        if not 1 <= levels <= self.levels:
            raise ValueError(f"levels must be in [1, {self.levels}], got {levels}")
        c = _as_codes(codes)
        if c.shape[1] < levels:
            raise ValueError(f"codes have {c.shape[1]} columns, need at least {levels}")
        out = np.zeros((c.shape[0], self.dim), dtype=np.float32)
        for l in range(levels):
            k = self.codebook_sizes[l]
            if c.shape[0] and c[:, l].max() >= k:
                raise ValueError(f"codes column {l} has value {int(c[:, l].max())} >= codebook size {k}")
            out += self.centroids[l][c[:, l]]
        return out

    def _encode_with_err(self, embeddings) -> tuple[np.ndarray, np.ndarray]:
        return rq_encode(embeddings, self._torch_centroids, self.config.chunk_size, return_sq_err=True)

    def reconstruction_error_per_level(self, embeddings) -> np.ndarray:
        """(L,) mean squared residual norm mean_i ||x_i - x_hat_{i,l}||^2 after each level."""
        _, sq = self._encode_with_err(embeddings)
        return sq.astype(np.float64).mean(axis=0)

    # -- SID tables -------------------------------------------------------------------------------

    def assign(self, item_ids, embeddings) -> SemanticIdTable:
        """Encode and disambiguate: the full item -> (L+1)-tuple table for these items."""
        ids = _as_item_ids(item_ids)
        codes = self.encode(embeddings)
        if codes.shape[0] != ids.shape[0]:
            raise ValueError(f"item_ids has {ids.shape[0]} rows but embeddings has {codes.shape[0]}")
        return assign_semantic_ids(ids, codes, self.version, self.codebook_sizes)

    def extend(self, table: SemanticIdTable, new_item_ids, new_embeddings) -> SemanticIdTable:
        """Add items without refitting (see module docstring); returns a new table."""
        return extend_semantic_ids(self, table, new_item_ids, new_embeddings)

    # -- drift ----------------------------------------------------------------------------------

    def staleness_report(
        self, embeddings, previous_codes=None, config: StalenessConfig = StalenessConfig()
    ) -> dict:
        """Drift of current embeddings against fit time (formulas in the module docstring)."""
        x = as_float32_matrix(embeddings, chunk_size=self.config.chunk_size)
        codes, sq = self._encode_with_err(x)
        mse_now = sq.astype(np.float64).mean(axis=0)
        fit_mse = self.fit_level_mse
        rel = [float(m / f - 1.0) if f > 0 else (0.0 if m == 0 else math.inf) for m, f in zip(mse_now, fit_mse)]
        kls = [
            _kl(np.bincount(codes[:, l], minlength=k).astype(np.float64), self.fit_usage[l].astype(np.float64))
            for l, k in enumerate(self.codebook_sizes)
        ]
        mean_now, _ = _mean_and_total_var(x, self.config.chunk_size)
        mean_shift = float(np.linalg.norm(mean_now - self.emb_mean) / math.sqrt(max(self.emb_total_var, 1e-30)))
        l1_changed = None
        if previous_codes is not None:
            prev = _as_codes(previous_codes)
            if prev.shape[0] != codes.shape[0]:
                raise ValueError(f"previous_codes has {prev.shape[0]} rows but embeddings has {codes.shape[0]}")
            l1_changed = float(np.mean(prev[:, 0] != codes[:, 0]))
        reasons = []
        if rel[-1] > config.max_error_increase:
            reasons.append(f"error_increase {rel[-1]:.3f} > {config.max_error_increase}")
        if max(kls) > config.max_usage_kl:
            reasons.append(f"max usage_kl {max(kls):.3f} > {config.max_usage_kl}")
        if l1_changed is not None and l1_changed > config.max_l1_changed_share:
            reasons.append(f"l1_changed_share {l1_changed:.3f} > {config.max_l1_changed_share}")
        return {
            "codebook_version": self.version,
            "n_items": int(codes.shape[0]),
            "level_mse": [float(m) for m in mse_now],
            "fit_level_mse": [float(m) for m in fit_mse],
            "level_error_increase": rel,
            "error_increase": rel[-1],
            "usage_kl": kls,
            "max_usage_kl": max(kls),
            "l1_changed_share": l1_changed,
            "mean_shift": mean_shift,
            "refit_recommended": bool(reasons),
            "reasons": reasons,
        }

    # -- files ----------------------------------------------------------------------------------

    @staticmethod
    def _paths(path) -> tuple[Path, Path]:
        p = Path(path)
        stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
        return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")

    def save(self, path) -> tuple[Path, Path]:
        """Write <stem>.npz (arrays) + <stem>.json (metadata), each crash-safe (models.artifacts: temp file, fsync,
        rename), the json last: rewriting a reused codebook in place never leaves a truncated file. Returns both
        paths."""
        npz_path, json_path = self._paths(path)
        arrays = {f"centroids_{l}": c for l, c in enumerate(self.centroids)}
        arrays.update({f"fit_usage_{l}": u for l, u in enumerate(self.fit_usage)})
        arrays["fit_level_mse"] = self.fit_level_mse
        arrays["emb_mean"] = self.emb_mean
        atomic_write(npz_path, lambda tmp: np.savez(tmp, **arrays))
        meta = {
            "format": "oxyrec.semantic_id_codebook",
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "fitted_at": self.fitted_at,
            "dim": self.dim,
            "levels": self.levels,
            "codebook_sizes": list(self.codebook_sizes),
            "config": asdict(self.config),
            "emb_total_var": self.emb_total_var,
            "n_items_fit": self.n_items_fit,
            "fit_info": self.fit_info,
            "arrays": sorted(arrays),
            "npz_file": npz_path.name,
        }
        atomic_write_json(json_path, meta, indent=2, sort_keys=True)
        return npz_path, json_path

    @classmethod
    def load(cls, path) -> "SemanticIdCodebook":
        """Read a pair written by `save`; ValueError naming the file if corrupt or incompatible."""
        npz_path, json_path = cls._paths(path)
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read codebook metadata {json_path}: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != "oxyrec.semantic_id_codebook":
            raise ValueError(f"{json_path} is not a semantic-id codebook metadata file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{json_path} has format_version {meta.get('format_version')}, this code reads {FORMAT_VERSION}"
            )
        try:
            config = RQKMeansConfig(**meta["config"])
            levels, dim = int(meta["levels"]), int(meta["dim"])
            with np.load(npz_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            centroids = tuple(np.ascontiguousarray(arrays[f"centroids_{l}"], dtype=np.float32) for l in range(levels))
            usage = tuple(arrays[f"fit_usage_{l}"].astype(np.int64) for l in range(levels))
            fit_level_mse = arrays["fit_level_mse"].astype(np.float64)
            emb_mean = arrays["emb_mean"].astype(np.float64)
        except (OSError, KeyError, TypeError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"cannot load codebook arrays from {npz_path}: {type(e).__name__}: {e}") from e
        for l, c in enumerate(centroids):
            if c.ndim != 2 or c.shape[1] != dim:
                raise ValueError(f"{npz_path}: centroids_{l} has shape {c.shape}, expected (K, {dim})")
            if usage[l].shape != (c.shape[0],):
                raise ValueError(f"{npz_path}: fit_usage_{l} has shape {usage[l].shape}, expected ({c.shape[0]},)")
        version = _version_hash(config, list(centroids))
        if version != meta["version"]:
            raise ValueError(
                f"{npz_path}: centroid/config hash {version} does not match version {meta['version']} in {json_path}"
            )
        return cls(
            centroids=centroids,
            config=config,
            version=version,
            fitted_at=str(meta["fitted_at"]),
            dim=dim,
            fit_level_mse=fit_level_mse,
            fit_usage=usage,
            emb_mean=emb_mean,
            emb_total_var=float(meta["emb_total_var"]),
            n_items_fit=int(meta["n_items_fit"]),
            fit_info=dict(meta.get("fit_info", {})),
        )


def fit_encode(embeddings, config: RQKMeansConfig = RQKMeansConfig()) -> tuple[SemanticIdCodebook, np.ndarray]:
    """Fit the codebook on embeddings (or a sample, see config) and encode all of them.

    Returns (codebook, codes (N, L) int64). Fit-time drift statistics use all N rows.
    """
    x = as_float32_matrix(embeddings, chunk_size=config.chunk_size)
    fit = fit_rq_kmeans(x, config)
    centroids = tuple(c.numpy() for c in fit.centroids)
    if fit.sample_rows is None:  # fitted on all rows: the fit already encoded them
        codes, sq = fit.codes.numpy(), fit.sq_err.numpy()
    else:
        codes, sq = rq_encode(x, fit.centroids, config.chunk_size, return_sq_err=True)
    mean, total_var = _mean_and_total_var(x, config.chunk_size)
    cb = SemanticIdCodebook(
        centroids=centroids,
        config=config,
        version=_version_hash(config, list(centroids)),
        fitted_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        dim=int(x.shape[1]),
        fit_level_mse=sq.astype(np.float64).mean(axis=0),
        fit_usage=tuple(np.bincount(codes[:, l], minlength=k).astype(np.int64) for l, k in enumerate(fit.codebook_sizes)),
        emb_mean=mean,
        emb_total_var=total_var,
        n_items_fit=int(x.shape[0]),
        fit_info={"n_iter": fit.n_iter, "inertia": fit.inertia, "n_fit_rows": fit.n_fit},
    )
    return cb, codes


def fit_codebook(embeddings, config: RQKMeansConfig = RQKMeansConfig()) -> SemanticIdCodebook:
    """Fit a `SemanticIdCodebook` (see `fit_encode`)."""
    return fit_encode(embeddings, config)[0]


def extend_semantic_ids(
    codebook: SemanticIdCodebook, table: SemanticIdTable, new_item_ids, new_embeddings
) -> SemanticIdTable:
    """Assign SIDs to items not yet in `table` with the existing codebook (no refit).

    Items already present keep their tuples (their new embeddings are ignored). A new item whose
    L codes collide gets max(existing disambiguation in that group) + 1 + rank among new items.
    """
    if table.codebook_version and table.codebook_version != codebook.version:
        raise ValueError(
            f"table was built with codebook {table.codebook_version}, not {codebook.version}: refit/reassign"
        )
    if table.levels != codebook.levels:
        raise ValueError(f"table has {table.levels} levels but the codebook has {codebook.levels}")
    ids = _as_item_ids(new_item_ids, "new_item_ids")
    _check_unique(ids, "new_item_ids")
    x = as_float32_matrix(new_embeddings, "new_embeddings", chunk_size=codebook.config.chunk_size)
    if x.shape[0] != ids.shape[0]:
        raise ValueError(f"new_item_ids has {ids.shape[0]} rows but new_embeddings has {x.shape[0]}")
    is_new = table._item_index.get_indexer(ids) < 0
    if not is_new.any():
        return table
    ids, x = ids[is_new], x[torch.from_numpy(is_new)]
    codes = codebook.encode(x)
    L = codebook.levels
    # Next free disambiguation index per existing L-prefix group.
    cols = [f"c{j}" for j in range(L)]
    existing = pd.DataFrame(table.codes[:, :L], columns=cols)
    existing["next"] = table.codes[:, L] + 1
    next_free = existing.groupby(cols, sort=False)["next"].max()
    new_df = pd.DataFrame(codes, columns=cols)
    start = new_df.merge(next_free.reset_index(), on=cols, how="left")["next"].fillna(0).to_numpy(np.int64)
    dis = _disambiguate(codes, ids, start)
    return SemanticIdTable(
        np.concatenate([table.item_ids, ids]),
        np.concatenate([table.codes, np.column_stack([codes, dis])]),
        codebook.version,
        table.level_sizes or codebook.codebook_sizes,
    )
