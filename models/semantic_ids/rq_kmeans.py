"""Residual K-Means (RQ-KMeans): the item tokenizer behind hierarchical Semantic IDs.

An item embedding x in R^D is turned into L codes (c_1..c_L), each in [0, K):

    r_0 = x
    c_l = argmin_k ||r_{l-1} - C_l[k]||^2          (nearest centroid of level l)
    r_l = r_{l-1} - C_l[c_l]                        (residual passed to the next level)
    x_hat_l = sum_{m<=l} C_m[c_m]                    (reconstruction after level l)

Level l's codebook C_l (K x D) is fitted with k-means on the residuals r_{l-1} of the fit set,
i.e. after levels < l are fitted and applied.

K-means per level (all float32, all chunked over rows so N x K never has to fit in memory):

* squared distances: d(x, c) = ||x||^2 - 2 x.c + ||c||^2, computed block-wise (one torch.addmm
  of `chunk_size` rows x K centres at a time, float32) and clamped at 0 (rounding can make it
  slightly negative). For argmin only ||c||^2 - 2 x.c is needed; ||x||^2 is added afterwards.
* init: batched greedy k-means++. The first centre is a uniform random row; the remaining K-1
  are chosen in `init_rounds` rounds of B = ceil((K-1) / init_rounds) centres each. For each of
  the B slots, T = 2 + floor(ln K) candidates are drawn with probability p(x) = D(x)^2 / sum D^2,
  where D(x) is the distance to the nearest centre chosen so far (inverse-CDF sampling on a
  float64 cumsum, so any N works), and the candidate with the lowest potential
  sum_i min(D(x_i)^2, d(x_i, cand)) is kept (greedy k-means++, as in scikit-learn; plain
  D^2 sampling too often puts two seeds in one cluster, which Lloyd cannot undo).
  B = 1 is classic greedy k-means++; batching turns K memory-bound mat-vec passes into
  `init_rounds` mat-mat passes.
  If every D(x) is 0 (all rows identical) centres are drawn uniformly. Seeding runs on a
  random subset of min(N, init_sample_per_code * K) rows (default 64 per code): it only
  needs a rough cover of the data, and Lloyd then refines on all fit rows.
* Lloyd step: assign every row to a centre, then C[k] = mean of rows assigned to k.
  - assignment="plain":    a_i = argmin_k d(x_i, C[k]) (standard k-means).
  - assignment="balanced": entropic optimal transport (Sinkhorn) with uniform cluster marginals.
    With cost M_ik = d(x_i, C[k]) / s (s = mean distance of rows to their nearest centre at
    the previous step, which makes `sinkhorn_eps` scale free), log-kernel G = -M / eps, row
    marginal a_i = 1/N and column marginal b_k = 1/K, the log-domain updates are
        u_i = log a_i - logsumexp_k(G_ik + v_k)
        v_k = log b_k - logsumexp_i(G_ik + u_i)
    run for `sinkhorn_iters` passes (v is warm-started from the previous Lloyd step, so
    a few passes per step suffice), then a_i = argmax_k (G_ik + v_k). v_k acts as a
    per-cluster price: crowded clusters get cheaper to leave, which fights hot codes.
    Cost: sinkhorn_iters + 1 passes over the N x K logits per Lloyd step (the logits are
    cached when N K <= 2^26, else recomputed), so balanced fitting is several times slower.
* empty clusters: re-seeded with the rows farthest from their assigned centre (top-E by
  distance for E empty clusters): this splits the cluster that is worst explained.
* stop when the relative change of inertia J_t (sum of assigned distances) is small,
  |J_{t-1} - J_t| <= tol * J_{t-1}, and no cluster was empty in that step; or when J_t = 0;
  or after max_iter steps. (Balanced mode keeps moving its prices v, so it usually runs
  longer than plain mode.)

Encoding (`rq_encode`) is always the nearest-centroid rule above, whatever `assignment` was
used for fitting, so an item's code depends only on its embedding (needed for incremental
assignment and serving).

Fewer fit rows than K: with auto_shrink the level size becomes K' = min(n, max(2, n // 4))
(about 4 rows per code, never more codes than rows) and a warning is emitted; otherwise a
ValueError is raised.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "RQKMeansConfig",
    "RQKMeansFit",
    "as_float32_matrix",
    "squared_distances",
    "nearest_centroid",
    "kmeans_plusplus",
    "fit_kmeans",
    "fit_rq_kmeans",
    "rq_encode",
    "shrunk_codebook_size",
]

ASSIGNMENTS = ("plain", "balanced")


@dataclass(frozen=True)
class RQKMeansConfig:
    levels: int = 3
    codebook_size: int = 256
    max_iter: int = 50
    tol: float = 1e-4
    assignment: str = "plain"  # "plain" | "balanced"
    sinkhorn_eps: float = 0.2  # entropic temperature, relative to the mean assigned distance
    sinkhorn_iters: int = 5  # Sinkhorn passes per Lloyd step (warm-started)
    fit_sample_size: int | None = None  # fit on a seeded random subset of this many rows
    seed: int = 0
    chunk_size: int = 65536  # rows per distance block
    auto_shrink: bool = True  # fewer rows than K -> shrink K (warning) instead of raising
    init_rounds: int = 32  # batched k-means++ rounds (B = ceil((K-1)/init_rounds) per round)
    init_sample_per_code: int | None = 64  # k-means++ runs on min(N, this * K) random rows; None = all

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        if self.codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {self.codebook_size}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.tol < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {self.assignment!r}")
        if self.sinkhorn_eps <= 0:
            raise ValueError(f"sinkhorn_eps must be > 0, got {self.sinkhorn_eps}")
        if self.sinkhorn_iters < 1:
            raise ValueError(f"sinkhorn_iters must be >= 1, got {self.sinkhorn_iters}")
        if self.fit_sample_size is not None and self.fit_sample_size < 1:
            raise ValueError(f"fit_sample_size must be >= 1 or None, got {self.fit_sample_size}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.init_rounds < 1:
            raise ValueError(f"init_rounds must be >= 1, got {self.init_rounds}")
        if self.init_sample_per_code is not None and self.init_sample_per_code < 1:
            raise ValueError(f"init_sample_per_code must be >= 1 or None, got {self.init_sample_per_code}")


@dataclass
class RQKMeansFit:
    """Result of `fit_rq_kmeans`: one (K_l, D) float32 centroid matrix per level + diagnostics."""

    centroids: list[torch.Tensor]
    n_iter: list[int] = field(default_factory=list)  # Lloyd steps run per level
    inertia: list[float] = field(default_factory=list)  # final sum of distances per level (fit rows)
    n_fit: int = 0  # rows used for fitting
    # Codes (n_fit, L) and squared residual norms ||r_l||^2 (n_fit, L) of the fit rows, and the
    # indices of those rows in the input (None = all rows, in order).
    codes: torch.Tensor | None = None
    sq_err: torch.Tensor | None = None
    sample_rows: torch.Tensor | None = None

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(int(c.shape[0]) for c in self.centroids)


# ----------------------------------------------------------------------------- input checks


def as_float32_matrix(embeddings, name: str = "embeddings", chunk_size: int = 65536) -> torch.Tensor:
    """Validate and convert to a contiguous float32 (N, D) CPU tensor (zero-copy when possible).

    Raises ValueError for non-2D / empty input and for NaN or inf values (reporting how many
    rows are bad and the first bad row index).
    """
    if isinstance(embeddings, torch.Tensor):
        x = embeddings.detach().to("cpu")
    else:
        arr = np.asarray(embeddings)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_items, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    x = x.to(torch.float32).contiguous()
    # A row with a NaN/inf has a non-finite sum; summing is ~30x cheaper than isfinite() on every
    # element. Rows flagged that way (which can also be finite rows whose sum overflows) are then
    # checked element-wise.
    flagged = (~torch.isfinite(x.sum(dim=1))).nonzero().squeeze(1)
    n_bad, first_bad = 0, -1
    if flagged.numel():
        bad_rows = flagged[~torch.isfinite(x[flagged]).all(dim=1)]
        n_bad = int(bad_rows.numel())
        first_bad = int(bad_rows[0]) if n_bad else -1
    if n_bad:
        raise ValueError(
            f"{name} has {n_bad} row(s) with NaN or inf values (first bad row index: {first_bad})"
        )
    return x


def shrunk_codebook_size(n_rows: int, codebook_size: int) -> int:
    """Level size used when n_rows < codebook_size: min(n, max(2, n // 4))."""
    return min(n_rows, max(2, n_rows // 4), codebook_size)


# ----------------------------------------------------------------------------- distances


def squared_distances(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(n, k) squared Euclidean distances ||x||^2 - 2 x c^T + ||c||^2, clamped at 0."""
    if c_sq is None:
        c_sq = (c * c).sum(dim=1)
    x_sq = (x * x).sum(dim=1, keepdim=True)
    return _partial_distances(x, c, c_sq).add_(x_sq).clamp_(min=0.0)


def _partial_distances(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor) -> torch.Tensor:
    """||c||^2 - 2 x c^T: the squared distance minus the per-row constant ||x||^2.

    argmin/argmax and Sinkhorn row normalisation are invariant to a per-row constant, so the
    hot loops skip the (n, k) add of ||x||^2 and only add it to the selected distances.
    """
    return torch.addmm(c_sq.unsqueeze(0), x, c.T, beta=1.0, alpha=-2.0)


def row_sq_norms(x: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
    """||x_i||^2 for every row, chunked (avoids an (N, D) temporary)."""
    out = torch.empty(x.shape[0], dtype=torch.float32)
    for s, e in _blocks(x.shape[0], chunk_size):
        out[s:e] = torch.linalg.vector_norm(x[s:e], dim=1).square_()
    return out


def _blocks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)


def nearest_centroid(
    x: torch.Tensor, c: torch.Tensor, chunk_size: int = 65536, x_sq: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (int64) and squared distance of the nearest centroid for every row, chunked.

    Pass x_sq (= row_sq_norms(x)) when calling repeatedly on the same rows.
    """
    n = x.shape[0]
    if x_sq is None:
        x_sq = row_sq_norms(x, chunk_size)
    idx = torch.empty(n, dtype=torch.int64)
    dist = torch.empty(n, dtype=torch.float32)
    c_sq = (c * c).sum(dim=1)
    for s, e in _blocks(n, chunk_size):
        d = _partial_distances(x[s:e], c, c_sq)
        torch.min(d, dim=1, out=(dist[s:e], idx[s:e]))
    dist.add_(x_sq).clamp_(min=0.0)
    return idx, dist


# ----------------------------------------------------------------------------- init


def _sample_rows(weights: torch.Tensor, b: int, gen: torch.Generator) -> torch.Tensor:
    """b row indices drawn with replacement with probability proportional to weights."""
    n = weights.shape[0]
    cdf = torch.cumsum(weights.to(torch.float64), dim=0)
    total = float(cdf[-1])
    if not total > 0.0:  # all rows coincide with chosen centres: fall back to uniform
        return torch.randint(0, n, (b,), generator=gen)
    u = torch.rand(b, generator=gen, dtype=torch.float64) * total
    return torch.searchsorted(cdf, u, right=True).clamp_(max=n - 1)


def kmeans_plusplus(
    x: torch.Tensor,
    k: int,
    gen: torch.Generator,
    chunk_size: int = 65536,
    init_rounds: int = 32,
    x_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batched greedy k-means++ seeding (see module docstring). Returns (k, D) float32 centres."""
    n = x.shape[0]
    if x_sq is None:
        x_sq = row_sq_norms(x, chunk_size)
    n_trials = 2 + int(math.log(k)) if k > 1 else 1
    first = torch.randint(0, n, (1,), generator=gen)
    chosen = [first]
    min_d = torch.full((n,), float("inf"), dtype=torch.float32)
    new = first
    n_chosen = 1
    batch = max(1, math.ceil((k - 1) / init_rounds)) if k > 1 else 1
    while True:
        # Update distances to the nearest chosen centre with the newly chosen rows only.
        _, d_new = nearest_centroid(x, x[new], chunk_size, x_sq)
        torch.minimum(min_d, d_new, out=min_d)
        if n_chosen >= k:
            break
        b = min(batch, k - n_chosen)
        cand = _sample_rows(min_d, b * n_trials, gen)
        # Potential sum_i min(D(x_i)^2, d(x_i, cand)) of each candidate, chunked over rows.
        pot = torch.zeros(cand.numel(), dtype=torch.float64)
        cc, cc_sq = x[cand], x_sq[cand]
        for s, e in _blocks(n, chunk_size):
            d = _partial_distances(x[s:e], cc, cc_sq).add_(x_sq[s:e].unsqueeze(1)).clamp_(min=0.0)
            pot += torch.minimum(d, min_d[s:e].unsqueeze(1)).sum(dim=0, dtype=torch.float64)
        new = cand.view(b, n_trials)[torch.arange(b), pot.view(b, n_trials).argmin(dim=1)]
        chosen.append(new)
        n_chosen += b
    return x[torch.cat(chosen)].clone()


# ----------------------------------------------------------------------------- Lloyd


def _sinkhorn_assign(
    x: torch.Tensor,
    x_sq: torch.Tensor,
    c: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    cfg: RQKMeansConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Balanced assignment by log-domain Sinkhorn (uniform marginals). Updates v in place.

    Returns (assignment, distance to the assigned centre, distance to the nearest centre).
    Logit blocks are cached when N*K <= 2^26 (256 MB), otherwise recomputed on every pass.
    """
    n, k = x.shape[0], c.shape[0]
    c_sq = (c * c).sum(dim=1)
    inv = 1.0 / (cfg.sinkhorn_eps * max(scale, 1e-30))
    log_a, log_b = -math.log(n), -math.log(k)
    cache: list[torch.Tensor] | None = [] if n * k <= (1 << 26) else None

    def logits(s: int, e: int, i: int) -> torch.Tensor:
        if cache is not None and i < len(cache):
            return cache[i]
        # Full distances here (not the partial ones): keeps the logits small when ||x|| is large.
        g = _partial_distances(x[s:e], c, c_sq).add_(x_sq[s:e].unsqueeze(1)).clamp_(min=0.0).mul_(-inv)
        if cache is not None:
            cache.append(g)
        return g

    for _ in range(cfg.sinkhorn_iters):
        col_lse = torch.full((k,), float("-inf"), dtype=torch.float32)
        for i, (s, e) in enumerate(_blocks(n, cfg.chunk_size)):
            g = logits(s, e, i)
            u = log_a - torch.logsumexp(g + v, dim=1)  # row potentials for this block
            col_lse = torch.logaddexp(col_lse, torch.logsumexp(g + u.unsqueeze(1), dim=0))
        v.copy_(log_b - col_lse)
        v.sub_(v.max())  # potentials are defined up to a constant; keep them bounded

    assign = torch.empty(n, dtype=torch.int64)
    d_assigned = torch.empty(n, dtype=torch.float32)
    d_nearest = torch.empty(n, dtype=torch.float32)
    for i, (s, e) in enumerate(_blocks(n, cfg.chunk_size)):
        g = logits(s, e, i)
        a = torch.argmax(g + v, dim=1)
        assign[s:e] = a
        d_assigned[s:e] = g.gather(1, a.unsqueeze(1)).squeeze(1) / -inv
        d_nearest[s:e] = g.max(dim=1).values / -inv
    return assign, d_assigned, d_nearest


def fit_kmeans(
    x: torch.Tensor, k: int, cfg: RQKMeansConfig, gen: torch.Generator
) -> tuple[torch.Tensor, int, float]:
    """One level of k-means on float32 rows x. Returns (centroids (k, D), n_iter, inertia)."""
    n, dim = x.shape
    x_sq = row_sq_norms(x, cfg.chunk_size)
    m = n if cfg.init_sample_per_code is None else min(n, cfg.init_sample_per_code * k)
    if m < n:  # seeding only needs a rough cover of the data; Lloyd refines on all rows
        rows = torch.randperm(n, generator=gen)[:m]
        c = kmeans_plusplus(x[rows], k, gen, cfg.chunk_size, cfg.init_rounds, x_sq[rows])
    else:
        c = kmeans_plusplus(x, k, gen, cfg.chunk_size, cfg.init_rounds, x_sq)
    v = torch.zeros(k, dtype=torch.float32)  # Sinkhorn column potentials (balanced mode)
    prev = float("inf")
    scale = None
    n_iter, inertia = 0, float("nan")
    for it in range(cfg.max_iter):
        if cfg.assignment == "balanced":
            if scale is None:  # first step: scale costs by the mean nearest-centre distance
                _, d0 = nearest_centroid(x, c, cfg.chunk_size, x_sq)
                scale = float(d0.double().mean())
            assign, dist, d_near = _sinkhorn_assign(x, x_sq, c, v, scale, cfg)
            scale = float(d_near.double().mean())
        else:
            assign, dist = nearest_centroid(x, c, cfg.chunk_size, x_sq)
        inertia = float(dist.double().sum())
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros(k, dim, dtype=torch.float32).index_add_(0, assign, x)
        new_c = sums / counts.clamp(min=1).unsqueeze(1).to(torch.float32)
        empty = counts == 0
        n_empty = int(empty.sum())
        if n_empty:
            # Keep the old centre for now, then move it onto one of the worst-explained rows.
            new_c[empty] = c[empty]
            far = torch.topk(dist, min(n_empty, n)).indices
            new_c[empty.nonzero().squeeze(1)[: far.numel()]] = x[far]
        c = new_c
        n_iter = it + 1
        if n_empty == 0 and math.isfinite(prev) and abs(prev - inertia) <= cfg.tol * prev:
            break
        if inertia == 0.0:  # nothing left to improve (e.g. all rows identical)
            break
        prev = inertia
    return c.contiguous(), n_iter, inertia


def fit_rq_kmeans(embeddings, config: RQKMeansConfig = RQKMeansConfig()) -> RQKMeansFit:
    """Fit L residual k-means levels (see module docstring). Input: (N, D) array/tensor."""
    x = as_float32_matrix(embeddings, chunk_size=config.chunk_size)
    n = x.shape[0]
    gen = torch.Generator().manual_seed(config.seed)
    rows = None
    if config.fit_sample_size is not None and config.fit_sample_size < n:
        rows = torch.randperm(n, generator=gen)[: config.fit_sample_size].sort().values
        x = x[rows]
    n_fit = x.shape[0]

    k = config.codebook_size
    if n_fit < k:
        if not config.auto_shrink:
            raise ValueError(
                f"only {n_fit} fit rows for codebook_size={k}: need at least codebook_size rows "
                f"(or set auto_shrink=True)"
            )
        k_new = shrunk_codebook_size(n_fit, k)
        warnings.warn(
            f"RQ-KMeans: {n_fit} fit rows < codebook_size={k}; shrinking every level to "
            f"K={k_new} (rule: min(n, max(2, n // 4)))",
            stacklevel=2,
        )
        k = k_new

    residual = x.clone()  # the caller's array is never modified
    fit = RQKMeansFit(centroids=[], n_fit=n_fit, sample_rows=rows)
    codes = torch.empty((n_fit, config.levels), dtype=torch.int64)
    sq_err = torch.empty((n_fit, config.levels), dtype=torch.float32)
    for lvl in range(config.levels):
        c, n_iter, inertia = fit_kmeans(residual, k, config, gen)
        # Same rule and chunking as rq_encode, so these are the codes encode() gives the fit rows.
        codes[:, lvl], _ = nearest_centroid(residual, c, config.chunk_size)
        residual.sub_(c[codes[:, lvl]])  # the next level is fitted on these residuals
        sq_err[:, lvl] = row_sq_norms(residual, config.chunk_size)
        fit.centroids.append(c)
        fit.n_iter.append(n_iter)
        fit.inertia.append(inertia)
    fit.codes, fit.sq_err = codes, sq_err
    return fit


# ----------------------------------------------------------------------------- encode


def rq_encode(
    embeddings, centroids: list[torch.Tensor], chunk_size: int = 65536, return_sq_err: bool = False
):
    """Codes (N, L) int64 by nearest centroid on residuals, chunked over rows.

    With return_sq_err, also returns (N, L) float32 squared residual norms ||r_l||^2 after each level.
    """
    if not centroids:
        raise ValueError("centroids is empty: fit the quantizer first")
    dim = int(centroids[0].shape[1])
    x = as_float32_matrix(embeddings, chunk_size=chunk_size)
    if x.shape[1] != dim:
        raise ValueError(f"embeddings have dim {x.shape[1]} but the codebook has dim {dim}")
    n, levels = x.shape[0], len(centroids)
    codes = torch.empty((n, levels), dtype=torch.int64)
    sq_err = torch.empty((n, levels), dtype=torch.float32) if return_sq_err else None
    c_sqs = [(c * c).sum(dim=1) for c in centroids]
    for s, e in _blocks(n, chunk_size):
        r = x[s:e].clone()
        for lvl, (c, c_sq) in enumerate(zip(centroids, c_sqs)):
            idx = torch.min(_partial_distances(r, c, c_sq), dim=1).indices  # as nearest_centroid
            codes[s:e, lvl] = idx
            r.sub_(c[idx])
            if sq_err is not None:
                sq_err[s:e, lvl] = torch.linalg.vector_norm(r, dim=1).square_()
    if return_sq_err:
        return codes.numpy(), sq_err.numpy()
    return codes.numpy()
