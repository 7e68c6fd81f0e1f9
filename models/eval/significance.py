"""The one gate of the pipeline: a paired bootstrap over the scored examples.

Two models scored on the same ``n`` examples give per-example values ``c_i`` (candidate) and ``r_i`` (reference)
of a metric (e.g. NDCG@10 of example i). Their difference of means is ``D = mean_i (c_i - r_i)``. A paired
bootstrap resamples the *examples* (with replacement, the same resample for both models, so the pairing is
kept) ``B`` times and takes the empirical ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
resampled differences as the confidence interval ``[low, high]`` of ``D`` (percentile method; Efron &
Tibshirani 1993, ch. 13):

    D*_b = mean_i (c_{j_bi} - r_{j_bi}),   j_bi ~ Uniform{0..n-1},  b = 1..B
    [low, high] = quantiles of {D*_b} at (1 -+ confidence) / 2

A gate passes when, for every gated metric, ``low >= -margin``: with ``margin = 0`` the candidate must not be
worse than the reference beyond what chance explains (and a candidate identical to the reference passes, its
interval being [0, 0]). The bootstrap is seeded, so the same inputs always give the same interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["GateDecision", "PairedComparison", "paired_bootstrap", "paired_gate"]

_CHUNK = 50_000_000  # resampled indices held in memory at once (B x n int32 in chunks of resamples)


@dataclass(frozen=True)
class PairedComparison:
    metric: str
    n: int
    candidate: float  # mean over the examples
    reference: float
    difference: float  # candidate - reference
    low: float  # confidence interval of the difference
    high: float
    confidence: float
    resamples: int

    @property
    def ratio(self) -> float:
        """candidate / reference (inf when the reference is 0 and the candidate is not)."""
        if self.reference == 0:
            return float("inf") if self.candidate > 0 else 1.0
        return self.candidate / self.reference

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def paired_bootstrap(candidate, reference, *, metric: str = "metric", resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Percentile interval of ``mean(candidate - reference)`` over ``resamples`` paired resamples."""
    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if c.ndim != 1 or c.shape != r.shape:
        raise ValueError(f"candidate and reference must be 1-D and aligned, got shapes {c.shape} and {r.shape}")
    if len(c) == 0:
        raise ValueError("paired_bootstrap: no examples")
    if not (np.isfinite(c).all() and np.isfinite(r).all()):
        raise ValueError("paired_bootstrap: per-example values must be finite")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = c - r
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, _CHUNK // n)
    for start in range(0, resamples, step):  # a loop over chunks of resamples, vectorized inside
        b = min(step, resamples - start)
        means[start:start + b] = d[rng.integers(0, n, size=(b, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return PairedComparison(metric=metric, n=n, candidate=float(c.mean()), reference=float(r.mean()),
                            difference=float(d.mean()), low=float(low), high=float(high),
                            confidence=confidence, resamples=resamples)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    margin: float
    comparisons: tuple[PairedComparison, ...]

    def describe(self, candidate: str = "candidate", reference: str = "reference") -> str:
        parts = [f"{c.metric} {c.candidate:.4f} vs {c.reference:.4f}: difference {c.difference:+.4f}, "
                 f"{100 * c.confidence:.0f}% CI [{c.low:+.4f}, {c.high:+.4f}]" for c in self.comparisons]
        verdict = "passes" if self.passed else "fails"
        return (f"{candidate} vs {reference} {verdict} (every lower bound must be >= {-self.margin:+.4f}): "
                + "; ".join(parts))

    def table(self) -> list[dict]:
        return [c.as_dict() for c in self.comparisons]


def paired_gate(candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                metrics: Sequence[str] = ("ndcg@10", "hr@10"), *, margin: float = 0.0, resamples: int = 1000,
                confidence: float = 0.95, seed: int = 0) -> GateDecision:
    """Pass iff for every metric the interval's lower bound of (candidate - reference) is >= ``-margin``.

    ``candidate`` / ``reference``: metric name -> per-example values on the same examples, in the same order."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not metrics:
        raise ValueError("paired_gate needs at least one metric")
    missing = [m for m in metrics if m not in candidate or m not in reference]
    if missing:
        raise ValueError(f"per-example values missing for metric(s) {missing}")
    comparisons = tuple(paired_bootstrap(candidate[m], reference[m], metric=m, resamples=resamples,
                                         confidence=confidence, seed=seed) for m in metrics)
    return GateDecision(passed=all(c.low >= -margin for c in comparisons), margin=float(margin),
                        comparisons=comparisons)
