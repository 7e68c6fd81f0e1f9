"""Semantic-ID quality metrics (the numbers of OxygenREC Table 2, plus load balance).

Input: codes (N, L) int before disambiguation, item categories (N,), codebook size K_l per level.
Levels are 1-indexed in the output (l1 = first code). For level l, a "prefix" is the tuple
(c_1, ..., c_l); the prefix at l = L is the full semantic ID before disambiguation.

    coverage_l        = |{c_l}| / K_l                         (share of level-l codes used)
    prefix_coverage_l = |{(c_1..c_l)}| / prod_{m<=l} K_m      (share of the prefix space used)
    purity_l          = sum_p max_y n(p, y) / N               (majority-category share of each
                        level-l prefix group p, weighted by group size; y = category label)
    entropy_l         = H(u_l) / log K_l, u_l = level-l code usage frequencies (over all K_l codes);
                        1 = perfectly uniform, 0 = one code (defined as 1 when K_l = 1)
    gini_l            = sum_{i=1..K} (2i - K - 1) x_(i) / (K sum x), x_(i) = usage counts sorted
                        ascending over all K_l codes (unused codes count as 0); 0 = uniform,
                        (K-1)/K = every item on one code
    recon_rel_mse_l   = sum_i ||x_i - x_hat_{i,l}||^2 / sum_i ||x_i - mean(x)||^2  (share of the
                        variance left after level l; needs embeddings + codebook)

Collisions use the full L-tuple: s_t = number of items with tuple t, over the distinct tuples t
that occur. collision_max = max s_t, collision_p99 / collision_p999 = numpy.percentile of s_t
(linear interpolation) at 99 / 99.9, collision_mean = N / #tuples, collision_share = share of
items whose tuple is shared with at least one other item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .codebook import fit_encode
from .rq_kmeans import RQKMeansConfig

__all__ = ["semantic_id_quality", "normalized_entropy", "gini", "prefix_ids", "compare_variants"]


def normalized_entropy(counts: np.ndarray) -> float:
    """H(p) / log K over the K entries of counts (zeros included); 1.0 when K == 1."""
    counts = np.asarray(counts, dtype=np.float64)
    k, total = counts.size, counts.sum()
    if k <= 1:
        return 1.0
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(k))


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (zeros included); 0 when all equal or empty."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    k, total = x.size, x.sum()
    if k == 0 or total <= 0:
        return 0.0
    i = np.arange(1, k + 1)
    return float(((2 * i - k - 1) * x).sum() / (k * total))


def prefix_ids(codes: np.ndarray) -> list[np.ndarray]:
    """For each level l, dense ids in [0, #prefixes) of the prefix (c_1..c_l) of every row."""
    out = []
    pid = np.zeros(codes.shape[0], dtype=np.int64)
    for l in range(codes.shape[1]):
        # pid < N and codes < max code + 1, so the packed key fits in int64.
        key = pid * (int(codes[:, l].max()) + 1) + codes[:, l]
        _, pid = np.unique(key, return_inverse=True)
        pid = pid.astype(np.int64).reshape(-1)
        out.append(pid)
    return out


def _purity(groups: np.ndarray, cats: np.ndarray, n_cats: int) -> float:
    key = groups * n_cats + cats
    uniq, counts = np.unique(key, return_counts=True)
    g = uniq // n_cats
    best = np.zeros(int(groups.max()) + 1, dtype=np.int64)
    np.maximum.at(best, g, counts)
    return float(best.sum() / groups.size)


def _relative_recon_error(embeddings, codes: np.ndarray, centroids, chunk: int = 65536) -> list[float]:
    """recon_rel_mse_l for every level, chunked over rows (no (N, D) float64 temporaries)."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] != codes.shape[0]:
        raise ValueError(f"embeddings must have shape ({codes.shape[0]}, dim), got {x.shape}")
    if x.shape[1] != centroids[0].shape[1]:
        raise ValueError(f"embeddings have dim {x.shape[1]} but the codebook has dim {centroids[0].shape[1]}")
    n, L = codes.shape
    mean = x.mean(axis=0, dtype=np.float64)
    total_var, sq = 0.0, np.zeros(L, dtype=np.float64)
    for s in range(0, n, chunk):
        xb = x[s : s + chunk].astype(np.float32)
        d = xb - mean.astype(np.float32)
        total_var += float(np.einsum("nd,nd->", d, d, dtype=np.float64))
        r = xb.copy()
        for l in range(L):
            r -= centroids[l][codes[s : s + chunk, l]]
            sq[l] += float(np.einsum("nd,nd->", r, r, dtype=np.float64))
    if total_var <= 0:
        return [0.0 if v == 0 else float("inf") for v in sq]
    return [float(v / total_var) for v in sq]


def semantic_id_quality(
    codes,
    categories=None,
    codebook_size: int | Sequence[int] = 256,
    embeddings=None,
    codebook=None,
) -> tuple[dict, pd.DataFrame]:
    """Quality metrics of semantic IDs (formulas in the module docstring).

    Returns (flat dict with keys like l1_coverage, l1_purity, l1_entropy, l1_gini,
    l1_prefix_coverage, l1_recon_rel_mse, collision_max, collision_p99, collision_p999,
    collision_mean, collision_share, n_items, n_unique_ids; one-row-per-level DataFrame).
    """
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"codes must be a non-empty 2-D (n_items, levels) array, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"codes must be integer, got dtype {c.dtype}")
    c = c.astype(np.int64, copy=False)
    n, L = c.shape
    sizes = [int(codebook_size)] * L if np.isscalar(codebook_size) else [int(k) for k in codebook_size]
    if len(sizes) != L:
        raise ValueError(f"codebook_size has {len(sizes)} entries for {L} levels")
    for l, k in enumerate(sizes):
        lo, hi = int(c[:, l].min()), int(c[:, l].max())
        if lo < 0 or hi >= k:
            raise ValueError(f"codes level {l + 1} has values in [{lo}, {hi}], outside [0, {k})")

    cats, n_cats = None, 0
    if categories is not None:
        cat_arr = np.asarray(categories)
        if cat_arr.shape != (n,):
            raise ValueError(f"categories must have shape ({n},), got {cat_arr.shape}")
        cats, uniques = pd.factorize(cat_arr, use_na_sentinel=False)
        cats, n_cats = cats.astype(np.int64), max(len(uniques), 1)

    recon = [float("nan")] * L
    if embeddings is not None and codebook is not None:
        recon = _relative_recon_error(embeddings, c, codebook.centroids)

    pids = prefix_ids(c)
    rows = []
    space = 1.0
    for l in range(L):
        k = sizes[l]
        space *= k
        usage = np.bincount(c[:, l], minlength=k)
        n_prefix = int(pids[l].max()) + 1
        rows.append(
            {
                "level": l + 1,
                "codebook_size": k,
                "unique_codes": int((usage > 0).sum()),
                "coverage": float((usage > 0).sum() / k),
                "unique_prefixes": n_prefix,
                "prefix_coverage": float(n_prefix / space),
                "purity": _purity(pids[l], cats, n_cats) if cats is not None else float("nan"),
                "entropy": normalized_entropy(usage),
                "gini": gini(usage),
                "recon_rel_mse": recon[l],
            }
        )
    table = pd.DataFrame(rows)

    sizes_per_tuple = np.bincount(pids[-1])
    out: dict = {"n_items": int(n), "levels": int(L), "n_unique_ids": int(sizes_per_tuple.size)}
    for row in rows:
        for key, val in row.items():
            if key != "level":
                out[f"l{row['level']}_{key}"] = val
    out.update(
        {
            "collision_max": int(sizes_per_tuple.max()),
            "collision_p99": float(np.percentile(sizes_per_tuple, 99)),
            "collision_p999": float(np.percentile(sizes_per_tuple, 99.9)),
            "collision_mean": float(n / sizes_per_tuple.size),
            "collision_share": float(sizes_per_tuple[sizes_per_tuple > 1].sum() / n),
        }
    )
    return out, table


def compare_variants(embeddings: dict[str, np.ndarray], labels: np.ndarray, base: RQKMeansConfig,
                     assignments: tuple[str, ...] = ("plain", "balanced"),
                     log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One codebook fit per (embedding source, assignment) with ``base``'s other settings and seed, and its
    :func:`semantic_id_quality` metrics: one row per fit (the paper's text-only vs fused embeddings comparison)."""
    rows = []
    for source, x in embeddings.items():
        for assignment in assignments:
            codebook, codes = fit_encode(x, dataclasses.replace(base, assignment=assignment))
            metrics, _ = semantic_id_quality(codes, labels, codebook.codebook_sizes, embeddings=x, codebook=codebook)
            rows.append({"embeddings": source, "assignment": assignment, **metrics})
            if log is not None:
                log(f"{source}/{assignment}: l1_purity={metrics['l1_purity']:.3f}")
    return pd.DataFrame(rows)

