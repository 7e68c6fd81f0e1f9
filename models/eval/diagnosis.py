"""Where does a ranking model win or lose? Pure functions on per-example ranks (numpy / pandas only).

Every function works on the 0-based rank ``r_b`` of example b's target in a model's ranked list (``inf`` when the
target is not in the list; :func:`models.eval.metrics.target_ranks`), so all models (beam-search generator,
full-softmax SASRec, popularity) are compared on the same examples with the same formulas:

    HR@k = mean_b 1[r_b < k],   NDCG@k = mean_b 1[r_b < k] / log2(r_b + 2)

* :func:`rank_metrics` - HR@k / NDCG@k of a rank array;
* :func:`bucketize` / :func:`bucket_table` - the metrics per bucket of an example attribute (history length,
  target popularity in the training events, repeat vs new target), one row per (bucket, model);
* :func:`is_repeat` - whether each target already occurs in the example's history (vectorized over a ragged
  list column);
* :func:`in_history` - which recommended items the user has already interacted with (slots spent on seen items);
* :func:`beam_recall` - share of targets inside the beam at all, for several beam widths W (the list of width W
  holds every final beam, so recall@W = HR@W of that list);
* :func:`search_loss` - exact vs beam ranking: share of examples whose target the model ranks in the top k when
  the whole catalog is scored (teacher-forced log p(item)), but that beam search loses;
* :func:`sid_usage` - SID collisions and per-level codebook usage (:func:`models.semantic_ids.metrics.
  semantic_id_quality`) plus the branching of the prefix tree (children per prefix), which bounds what
  the first decoding steps must discriminate;
* :func:`paired_bootstrap` - mean difference of two per-example metrics with a bootstrap confidence interval
  over examples (resampled jointly: the pairing is kept);
* :func:`curve_summary` - best epoch of a learning curve and whether it was still rising at its end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.semantic_ids.metrics import prefix_ids, semantic_id_quality

__all__ = [
    "HISTORY_EDGES",
    "POPULARITY_EDGES",
    "beam_recall",
    "bucket_table",
    "bucketize",
    "curve_summary",
    "full_histories",
    "in_history",
    "is_repeat",
    "rank_metrics",
    "search_loss",
    "sid_usage",
]

# history length buckets [lo, hi): 0, 1-4, 5-9, 10-19, 20-49, 50-99, 100-199, 200+
HISTORY_EDGES = (0, 1, 5, 10, 20, 50, 100, 200)
# target popularity (train events of the target item) buckets [lo, hi)
POPULARITY_EDGES = (0, 1, 10, 50, 100, 200, 400)


def full_histories(frame: pd.DataFrame, rows: np.ndarray | None = None, *, order_col: str = "position",
                   user_col: str = "user_id", item_col: str = "item_id",
                   history_col: str = "long_item_ids") -> list[np.ndarray]:
    """Every item a user had before each example's target (raw ids, oldest first), rebuilt from the whole frame
    (all splits): the earliest example's ``history_col`` + the targets of the user's earlier examples (by
    ``order_col``). Unlike ``history_col`` it is never capped. ``rows``: positions in ``frame`` to return
    (default all)."""
    for col in (order_col, user_col, item_col, history_col):
        if col not in frame.columns:
            raise ValueError(f"frame needs {col!r}; has {list(frame.columns)}")
    rows = np.arange(len(frame)) if rows is None else np.asarray(rows)
    order = np.lexsort((frame[order_col].to_numpy(), frame[user_col].astype(str).to_numpy()))
    users = frame[user_col].astype(str).to_numpy()[order]
    items = frame[item_col].astype(str).to_numpy()[order]
    hists = frame[history_col].to_numpy()[order]
    out_of = np.empty(len(frame), dtype=object)
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and users[end] == users[start]:
            end += 1
        first = hists[start]
        prefix = [str(x) for x in (() if first is None else first)]
        for j in range(start, end):
            out_of[order[j]] = np.asarray(prefix + list(items[start:j]), dtype=object)
        start = end
    return [out_of[r] for r in rows]


def _ranks(ranks) -> np.ndarray:
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"ranks must be 1-D (one rank per example), got shape {r.shape}")
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("ranks must be >= 0 (np.inf = not ranked); got NaN or negative values")
    return r


def rank_metrics(ranks, ks: Sequence[int] = (10,)) -> dict[str, float]:
    """{"n", "hr@k", "ndcg@k"} of 0-based ranks (inf = miss)."""
    r = _ranks(ranks)
    out: dict[str, float] = {"n": int(r.size)}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"ks must be >= 1, got {k}")
        inside = r < k
        gain = 1.0 / np.log2(np.where(inside, r, 0.0) + 2.0)
        out[f"hr@{k}"] = float(inside.mean()) if r.size else float("nan")
        out[f"ndcg@{k}"] = float(np.where(inside, gain, 0.0).mean()) if r.size else float("nan")
    return out


def bucketize(values, edges: Sequence[float]) -> np.ndarray:
    """Label of each value's bucket [edges[i], edges[i+1]) (the last bucket is open), e.g. "5-9", "200+".
    Integer-valued edges give inclusive integer labels; values below edges[0] raise ValueError."""
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 1 or (np.diff(e) <= 0).any():
        raise ValueError(f"edges must be strictly increasing, got {list(edges)}")
    if (v < e[0]).any() or np.isnan(v).any():
        raise ValueError(f"values must be >= edges[0]={e[0]} and not NaN")
    integer = bool(np.all(e == np.round(e)))
    labels = []
    for i, lo in enumerate(e):
        if i + 1 == e.size:
            labels.append(f"{lo:g}+")
        elif integer and e[i + 1] - lo == 1:
            labels.append(f"{lo:g}")
        else:
            labels.append(f"{lo:g}-{(e[i + 1] - 1) if integer else e[i + 1]:g}")
    idx = np.searchsorted(e, v, side="right") - 1
    return np.asarray(labels, dtype=object)[idx]


def bucket_table(ranks_by_model: Mapping[str, np.ndarray], buckets, ks: Sequence[int] = (10,),
                 order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (bucket, model): bucket, model, n, share (of all examples), hr@k, ndcg@k; plus an "all" row
    per model. ``buckets``: one label per example (same examples for every model); ``order``: bucket order."""
    labels = np.asarray(buckets, dtype=object)
    rows = []
    sizes = {name: _ranks(r).size for name, r in ranks_by_model.items()}
    if any(s != labels.size for s in sizes.values()):
        raise ValueError(f"every model needs one rank per example ({labels.size}), got {sizes}")
    present = list(pd.unique(labels)) if order is None else [b for b in order if (labels == b).any()]
    for bucket in [*present, "all"]:
        sel = np.ones(labels.size, bool) if bucket == "all" else labels == bucket
        for name, r in ranks_by_model.items():
            row = {"bucket": str(bucket), "model": name, "share": float(sel.mean()) if labels.size else 0.0}
            row.update(rank_metrics(_ranks(r)[sel], ks))
            rows.append(row)
    return pd.DataFrame(rows)


def is_repeat(histories, targets) -> np.ndarray:
    """Bool[N]: target b occurs in history b. ``histories``: a list-like column (lists / arrays / None) or a
    pyarrow ListArray; ``targets``: N ids of the same type as the history entries (compared as strings)."""
    t = np.asarray(targets).astype(str)
    if isinstance(histories, (pa.Array, pa.ChunkedArray)):
        arr = histories.combine_chunks() if isinstance(histories, pa.ChunkedArray) else histories
    else:
        seq = histories.to_numpy(dtype=object) if isinstance(histories, pd.Series) else np.asarray(histories, dtype=object)
        arr = pa.array([None if h is None else [str(x) for x in h] for h in seq], type=pa.list_(pa.string()))
    if len(arr) != t.size:
        raise ValueError(f"histories has {len(arr)} rows but targets has {t.size}")
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.cast(pc.list_flatten(arr), pa.string()).to_numpy(zero_copy_only=False).astype(str)
    row = np.repeat(np.arange(t.size), lengths)
    out = np.zeros(t.size, dtype=bool)
    hit = flat == t[row]
    out[row[hit]] = True
    return out


def in_history(ranked_ids, histories) -> np.ndarray:
    """Bool[N, k]: entry (b, j) of the ranked lists (item ids, compared as strings) occurs in history b (a list-like
    column of ids, as for :func:`is_repeat`). Its mean is the share of recommendation slots spent on items the user
    has already interacted with."""
    ranked = np.asarray(ranked_ids).astype(str)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_ids must be [N, k], got shape {ranked.shape}")
    seq = histories.to_numpy(dtype=object) if isinstance(histories, pd.Series) else np.asarray(histories, dtype=object)
    if len(seq) != ranked.shape[0]:
        raise ValueError(f"histories has {len(seq)} rows but ranked_ids has {ranked.shape[0]}")
    lengths = np.array([0 if h is None else len(h) for h in seq], dtype=np.int64)
    flat = np.concatenate([np.asarray(h).astype(str) for h in seq if h is not None and len(h)] or [np.zeros(0, str)])
    hist = pd.MultiIndex.from_arrays([np.repeat(np.arange(len(seq)), lengths), flat])
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    return pd.MultiIndex.from_arrays([rows, ranked.ravel()]).isin(hist).reshape(ranked.shape)


def beam_recall(ranked_by_beam: Mapping[int, np.ndarray], targets) -> dict[int, float]:
    """{W: share of targets anywhere in the width-W list} for ranked lists [N, W] (item -1 = unfilled)."""
    t = np.asarray(targets)
    t = np.where(t >= 0, t, -2)  # an unknown target is never inside
    out = {}
    for w, ranked in sorted(ranked_by_beam.items()):
        r = np.asarray(ranked)
        if r.ndim != 2 or r.shape[0] != t.size:
            raise ValueError(f"ranked lists of beam {w} must be [N={t.size}, W], got {r.shape}")
        out[int(w)] = float((r == t[:, None]).any(1).mean())
    return out


def search_loss(exact_ranks, beam_ranks, k: int = 10) -> dict[str, float]:
    """Exact (whole catalog, teacher-forced scores) vs beam-search ranks of the same model and examples:
    exact_hr@k, beam_hr@k, lost = share with exact < k <= beam (search errors), gained = the reverse."""
    e, b = _ranks(exact_ranks), _ranks(beam_ranks)
    if e.size != b.size:
        raise ValueError(f"exact and beam ranks differ in length: {e.size} vs {b.size}")
    return {"n": int(e.size), f"exact_hr@{k}": float((e < k).mean()), f"beam_hr@{k}": float((b < k).mean()),
            "lost": float(((e < k) & (b >= k)).mean()), "gained": float(((b < k) & (e >= k)).mean())}


def sid_usage(codes, vocab_sizes: Sequence[int], weights=None) -> dict:
    """SID quality of a catalog's codes (N, L+1) incl. the disambiguation level: ``semantic_id_quality`` of the
    L RQ levels (coverage, entropy, gini, collisions of the L-tuple) plus, per level l (1-based, all L+1
    levels), children per non-leaf prefix (mean / max: the choices of decoding step l) and the share of items
    whose prefix of length l is already unique. ``weights`` (N,), e.g. train interaction counts, adds the
    share of interactions on items whose L-tuple collides (the decoder must then also get the last code right)."""
    c = np.asarray(codes, dtype=np.int64)
    if c.ndim != 2 or c.shape[1] != len(vocab_sizes) or c.shape[0] == 0:
        raise ValueError(f"codes must be (N>0, {len(vocab_sizes)}), got {c.shape}")
    n, l1 = c.shape
    rq = l1 - 1 if l1 > 1 else l1
    summary, _ = semantic_id_quality(c[:, :rq], codebook_size=list(vocab_sizes[:rq]))
    out: dict = {"n_items": int(n), "vocab_sizes": [int(v) for v in vocab_sizes], "rq": summary,
                 "disambiguation_size": int(vocab_sizes[-1]) if l1 > 1 else 1}
    pids = prefix_ids(c)
    levels = []
    parent = np.zeros(n, dtype=np.int64)
    for l in range(l1):
        child = pids[l]
        pairs = np.unique(np.stack([parent, child], 1), axis=0)
        per_parent = np.bincount(pairs[:, 0])
        per_parent = per_parent[per_parent > 0]
        size = np.bincount(child)
        levels.append({"level": l + 1, "prefixes": int(size.size),
                       "children_mean": float(per_parent.mean()), "children_max": int(per_parent.max()),
                       "unique_share": float((size[child] == 1).mean())})
        parent = child
    out["levels"] = levels
    tuple_size = np.bincount(pids[rq - 1])[pids[rq - 1]]
    out["items_with_colliding_tuple"] = float((tuple_size > 1).mean())
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {w.shape}")
        out["interactions_on_colliding_tuple"] = float(w[tuple_size > 1].sum() / max(w.sum(), 1e-12))
    return out


def curve_summary(values: Sequence[float], window: int = 3) -> dict:
    """Best index/value of a validation curve, its last value, and ``still_rising`` = the best value is among
    the last ``window`` points (training stopped before the curve turned)."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(v))
    if ok.size == 0:
        return {"points": 0}
    best = int(ok[np.argmax(v[ok])])
    return {"points": int(ok.size), "best_index": best, "best": float(v[best]), "last": float(v[ok[-1]]),
            "still_rising": bool(best >= ok[-1] - (window - 1))}
