"""Behavioural item embeddings from co-occurrence in user histories (PPMI + truncated SVD).

Two items co-occur when they appear within ``window`` positions of each other in one user's time-ordered
history, weighted 1/distance. With C the symmetric co-occurrence matrix, N = sum(C), row sums c_i:

    PPMI_ij = max(0, log(C_ij * N / (c_i * c_j)))
    E = V_k * sqrt(lambda_k)     (top-k positive eigenpairs of the symmetric PPMI), rows L2-normalised

Eigenpairs rather than SVD: PPMI has negative eigenvalues (e.g. an isolated pair i-j), and SVD would keep
their sign-flipped directions, making co-occurring items anti-similar.

Items that never co-occur get a zero vector (``has_behaviour`` is False for them), so the fusion step can
fall back to text alone. Everything is vectorized: pairs are built with array shifts per offset, not per user.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh


def cooccurrence_matrix(user_codes: np.ndarray, item_codes: np.ndarray, n_items: int, window: int) -> sp.csr_matrix:
    """``user_codes``/``item_codes`` are parallel int arrays already sorted by (user, time)."""
    rows, cols, weights = [], [], []
    for offset in range(1, window + 1):  # a loop over offsets, not over users or items
        same_user = user_codes[offset:] == user_codes[:-offset]
        a, b = item_codes[:-offset][same_user], item_codes[offset:][same_user]
        keep = a != b
        rows += [a[keep], b[keep]]
        cols += [b[keep], a[keep]]
        weight = np.full(int(keep.sum()), 1.0 / offset)
        weights += [weight, weight]
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    matrix = sp.coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
    )
    return matrix.tocsr()  # duplicates are summed


def ppmi(counts: sp.csr_matrix) -> sp.csr_matrix:
    total = counts.sum()
    if total == 0:
        return counts.astype(np.float64)
    row_sums = np.asarray(counts.sum(axis=1)).ravel()
    coo = counts.tocoo()
    values = np.log(coo.data * total / (row_sums[coo.row] * row_sums[coo.col]))
    keep = values > 0
    return sp.csr_matrix((values[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)


def behaviour_embeddings(
    user_codes: np.ndarray, item_codes: np.ndarray, n_items: int, dim: int, window: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (embeddings [n_items, dim] float32, has_behaviour [n_items] bool)."""
    matrix = ppmi(cooccurrence_matrix(user_codes, item_codes, n_items, window))
    has_behaviour = np.asarray((matrix != 0).sum(axis=1)).ravel() > 0
    out = np.zeros((n_items, dim), dtype=np.float32)
    rank = min(dim, n_items - 2, int(has_behaviour.sum()) - 1)
    if rank < 1:
        return out, np.zeros(n_items, dtype=bool)
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(n_items)  # fixed start vector: ARPACK is otherwise nondeterministic
    values, vectors = eigsh(matrix.astype(np.float64), k=rank, which="LA", v0=v0)
    order = np.argsort(-values)
    values, vectors = values[order], vectors[:, order]
    values = np.where(values > 1e-9 * max(values.max(), 1e-12), values, 0.0)  # drop null/negative directions
    vectors = vectors * np.sqrt(values)
    vectors[~has_behaviour] = 0.0
    # Fix the sign of each component (SVD is sign-ambiguous) so reruns agree exactly.
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(rank)])
    vectors = vectors * np.where(signs == 0, 1, signs)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    out[:, :rank] = vectors
    return out, has_behaviour & (norms.ravel() > 0)
