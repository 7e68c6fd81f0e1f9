"""Ranking metrics for next-item prediction with one relevant item per case.

For case ``b`` with ranked list ``ranked[b, :]`` (best first) and held-out item ``targets[b]``, let
``r_b`` be the 0-based position of the target in the list (``inf`` if absent). Then

    HR@k   = mean_b 1[r_b < k]
    NDCG@k = mean_b 1[r_b < k] / log2(r_b + 2)

(with a single relevant item the ideal DCG is 1, so NDCG = DCG). A target listed twice counts at its first
position. Everything is vectorized over the batch; inputs may be numpy arrays or torch tensors.

:func:`top_k` turns a score matrix into ranked lists, optionally masking already-seen items, so every
model is ranked the same way (full catalog, no sampled negatives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["per_group_metrics", "per_case_metrics", "rank_metrics", "ranking_metrics", "target_ranks", "top_k"]

DEFAULT_KS = (1, 5, 10)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def target_ranks(ranked, targets) -> np.ndarray:
    """0-based position of each target in its ranked list; ``np.inf`` where it is not in the list."""
    ranked, targets = _to_numpy(ranked), _to_numpy(targets)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D [B, k], got shape {ranked.shape}")
    if targets.ndim != 1 or targets.shape[0] != ranked.shape[0]:
        raise ValueError(f"targets must be 1-D with B={ranked.shape[0]} entries, got shape {targets.shape}")
    hit = ranked == targets[:, None]  # [B, k]
    first = hit.argmax(axis=1).astype(np.float64)
    return np.where(hit.any(axis=1), first, np.inf)


def _check_ks(ks: Sequence[int], width: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive, got {ks}")
    if max(ks) > width:
        raise ValueError(f"ranked lists have length {width} but metrics@{max(ks)} were requested")
    return ks


def per_case_metrics(ranked, targets, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-case hit and NDCG arrays ``{"hr@k": [B], "ndcg@k": [B]}`` (means of these are the metrics)."""
    r = target_ranks(ranked, targets)  # validates the shapes
    return rank_metrics(r, _check_ks(ks, int(np.shape(ranked)[1])))


def rank_metrics(ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """``{"hr@k": [B], "ndcg@k": [B]}`` from 0-based target ranks (``inf`` = not ranked)."""
    r = np.asarray(ranks, dtype=np.float64)
    gain = 1.0 / np.log2(np.where(np.isfinite(r), r, 0.0) + 2.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        inside = r < k
        out[f"hr@{k}"] = inside.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(inside, gain, 0.0)
    return out


def ranking_metrics(ranked, targets, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@k and NDCG@k over the batch: ``{"hr@1": ..., "ndcg@1": ..., "hr@5": ...}``."""
    if len(targets) == 0:
        raise ValueError("ranking_metrics: empty batch")
    return {name: float(v.mean()) for name, v in per_case_metrics(ranked, targets, ks).items()}


def per_group_metrics(ranked, targets, groups, ks: Sequence[int] = DEFAULT_KS) -> pd.DataFrame:
    """One row per group (e.g. scenario) plus an ``"overall"`` row; columns ``group, n, hr@k, ndcg@k``."""
    groups = _to_numpy(groups)
    if groups.shape != (len(targets),):
        raise ValueError(f"groups must have one entry per target ({len(targets)}), got shape {groups.shape}")
    if len(targets) == 0:
        raise ValueError("per_group_metrics: empty batch")
    cases = pd.DataFrame(per_case_metrics(ranked, targets, ks))
    cases["group"] = groups.astype(str)
    by = cases.groupby("group", sort=True)
    table = by.mean()
    table.insert(0, "n", by.size())
    overall = cases.drop(columns="group").mean().to_frame("overall").T
    overall.insert(0, "n", len(cases))
    table = pd.concat([table, overall])
    table.index.name = "group"
    return table.reset_index()


def top_k(scores: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the ``k`` highest scores per row of ``scores`` [B, V].

    ``exclude`` is a [B, H] LongTensor of item indices to drop from the ranking (e.g. the user's history),
    padded with 0; index 0 is the padding item and is always excluded. Excluded items get score ``-inf``.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, V], got shape {tuple(scores.shape)}")
    if not 1 <= k <= scores.shape[1] - 1:
        raise ValueError(f"k must be in [1, {scores.shape[1] - 1}], got {k}")
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    if exclude is not None:
        if exclude.ndim != 2 or exclude.shape[0] != scores.shape[0]:
            raise ValueError(f"exclude must be [B={scores.shape[0]}, H], got shape {tuple(exclude.shape)}")
        scores.scatter_(1, exclude.long(), float("-inf"))
    return scores.topk(k, dim=1).indices
