"""Per-example evaluation outcomes ("cases") and what is derived from them: summaries, paired gates.

A cases table has one row per (split, model, example): ``split, model, example, user_id, scenario, rank`` with
``rank`` the 0-based position of the example's target in the model's ranked list (``inf`` when absent). Every
model of one split is scored on the same examples in the same order (``example`` = row of the split's frame),
so two models' rows pair up example by example: that pairing is what :func:`compare` and :func:`gate` use.

Reference models may be named directly (``popularity``, ``sasrec``, ...) or as ``best_sasrec``: the SASRec
variant (model name starting with ``sasrec``) with the highest *validation* NDCG@10, so the choice never looks
at the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.eval.metrics import DEFAULT_KS, rank_metrics
from models.eval.significance import GateDecision, PairedComparison, paired_bootstrap, paired_gate

__all__ = ["BEST_SASREC", "CASE_COLUMNS", "case_metrics", "compare", "gate", "overall", "per_example",
           "resolve_model", "summary_table"]

CASE_COLUMNS = ("model", "example", "user_id", "scenario", "rank")
BEST_SASREC = "best_sasrec"


def case_metrics(cases: pd.DataFrame, ks: Sequence[int] = DEFAULT_KS) -> pd.DataFrame:
    """``cases`` with per-example ``hr@k`` and ``ndcg@k`` columns computed from ``rank``."""
    return cases.assign(**rank_metrics(cases["rank"].to_numpy(np.float64), ks))


def summary_table(cases: pd.DataFrame, ks: Sequence[int] = DEFAULT_KS) -> pd.DataFrame:
    """Mean metrics per (``split`` if present, model, scenario) plus an ``overall`` group row per model:
    columns ``[split,] model, group, n, hr@k, ndcg@k``."""
    m = case_metrics(cases, ks)
    keys = [c for c in ("split", "model") if c in m.columns]
    metric_cols = [c for k in ks for c in (f"hr@{k}", f"ndcg@{k}")]
    by_group = m.groupby([*keys, "scenario"], sort=True)[metric_cols]
    table = by_group.mean()
    table.insert(0, "n", by_group.size())
    table = table.reset_index().rename(columns={"scenario": "group"})
    whole = m.groupby(keys, sort=True)[metric_cols]
    total = whole.mean()
    total.insert(0, "n", whole.size())
    total = total.reset_index().assign(group="overall")
    return pd.concat([table, total], ignore_index=True)[[*keys, "group", "n", *metric_cols]]


def overall(cases: pd.DataFrame, split: str, ks: Sequence[int] = DEFAULT_KS) -> dict[str, dict[str, float]]:
    """{model: {"n", "hr@k", "ndcg@k"}} over all examples of ``split``."""
    table = summary_table(_split(cases, split), ks)
    rows = table[table["group"] == "overall"].drop(columns=["group", "split"], errors="ignore")
    return {r.pop("model"): r for r in rows.to_dict(orient="records")}


def _split(cases: pd.DataFrame, split: str | None) -> pd.DataFrame:
    if split is None or "split" not in cases.columns:
        return cases
    part = cases[cases["split"] == split]
    if part.empty:
        raise ValueError(f"the cases have no {split!r} split; splits: {sorted(cases['split'].unique())}")
    return part


def resolve_model(cases: pd.DataFrame, name: str) -> str:
    """``name`` itself, or for ``best_sasrec`` the SASRec variant with the best validation NDCG@10."""
    models = set(cases["model"].unique())
    if name != BEST_SASREC:
        if name not in models:
            raise ValueError(f"no model {name!r} in the evaluation; models: {sorted(models)}")
        return name
    variants = sorted(m for m in models if m.startswith("sasrec"))
    if not variants:
        raise ValueError(f"{BEST_SASREC}: the evaluation has no SASRec model; models: {sorted(models)}")
    scores = overall(cases, "valid", (10,)) if "split" in cases.columns else overall(cases, None, (10,))
    return max(variants, key=lambda m: (scores[m]["ndcg@10"], m == variants[0]))


def per_example(cases: pd.DataFrame, model: str, split: str | None, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """{metric: per-example values in example order} of one model on one split."""
    part = _split(cases, split)
    part = part[part["model"] == model].sort_values("example", kind="stable")
    if part.empty:
        raise ValueError(f"no cases of model {model!r}")
    ks = sorted({int(m.split("@")[1]) for m in metrics})
    values = rank_metrics(part["rank"].to_numpy(np.float64), ks)
    return {m: values[m] for m in metrics}


def _aligned(cases: pd.DataFrame, a: str, b: str, split: str | None) -> None:
    part = _split(cases, split)
    ea = part.loc[part["model"] == a, "example"].sort_values().to_numpy()
    eb = part.loc[part["model"] == b, "example"].sort_values().to_numpy()
    if not np.array_equal(ea, eb):
        raise ValueError(f"{a!r} and {b!r} were not scored on the same examples ({len(ea)} vs {len(eb)})")


def compare(cases: pd.DataFrame, candidate: str, reference: str, split: str | None,
            metrics: Sequence[str] = ("ndcg@10", "hr@10"), *, resamples: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> list[PairedComparison]:
    """Paired-bootstrap intervals of (candidate - reference) on the same examples of ``split``."""
    reference = resolve_model(cases, reference)
    _aligned(cases, candidate, reference, split)
    c = per_example(cases, candidate, split, metrics)
    r = per_example(cases, reference, split, metrics)
    return [paired_bootstrap(c[m], r[m], metric=m, resamples=resamples, confidence=confidence, seed=seed)
            for m in metrics]


def compare_all(cases: pd.DataFrame, candidate: str, split: str | None, metrics: Sequence[str] = ("ndcg@10", "hr@10"),
                *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """:func:`compare` of ``candidate`` against every other model of ``cases``: one row per (model, metric) with
    candidate, reference, difference, low, high and ratio."""
    return pd.DataFrame([{"model": name, **c.as_dict()}
                         for name in sorted(set(cases["model"]) - {candidate})
                         for c in compare(cases, candidate, name, split, metrics, resamples=resamples,
                                          confidence=confidence, seed=seed)])


def gate(cases: pd.DataFrame, candidate: str, reference: str, split: str | None = "valid",
         metrics: Sequence[str] = ("ndcg@10", "hr@10"), *, margin: float = 0.0, resamples: int = 1000,
         confidence: float = 0.95, seed: int = 0) -> tuple[str, GateDecision]:
    """(resolved reference name, :func:`models.eval.significance.paired_gate` of candidate vs reference)."""
    reference = resolve_model(cases, reference)
    _aligned(cases, candidate, reference, split)
    decision = paired_gate(per_example(cases, candidate, split, metrics), per_example(cases, reference, split, metrics),
                           metrics, margin=margin, resamples=resamples, confidence=confidence, seed=seed)
    return reference, decision
