"""Per-example cases: summaries, the best SASRec variant (chosen on validation) and the paired gate."""

import math

import numpy as np
import pandas as pd
import pytest

from models.eval import cases as C


def _cases(ranks: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    parts = []
    for (split, model), r in ranks.items():
        parts.append(pd.DataFrame({"split": split, "model": model, "example": np.arange(len(r)),
                                   "user_id": [f"u{i}" for i in range(len(r))],
                                   "scenario": ["a", "b"] * (len(r) // 2) + ["a"] * (len(r) % 2), "rank": r}))
    return pd.concat(parts, ignore_index=True)


INF = math.inf


def test_summary_table_per_scenario_and_overall():
    cases = _cases({("test", "m"): [0, 1, INF, 12]})
    table = C.summary_table(cases).set_index(["model", "group"])
    assert table.loc[("m", "overall"), "n"] == 4 and table.loc[("m", "overall"), "hr@10"] == pytest.approx(0.5)
    assert table.loc[("m", "overall"), "ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert table.loc[("m", "a"), "hr@1"] == pytest.approx(0.5)  # examples 0 and 2 are scenario a
    assert C.overall(cases, "test")["m"]["hr@5"] == pytest.approx(0.5)


def test_best_sasrec_is_chosen_on_validation_not_test():
    cases = _cases({("valid", "sasrec"): [0, 0, 5, INF], ("valid", "sasrec_scenario"): [0, 9, INF, INF],
                    ("test", "sasrec"): [INF] * 4, ("test", "sasrec_scenario"): [0] * 4})
    assert C.resolve_model(cases, C.BEST_SASREC) == "sasrec"
    with pytest.raises(ValueError, match="no model 'gru'"):
        C.resolve_model(cases, "gru")
    with pytest.raises(ValueError, match="no SASRec"):
        C.resolve_model(cases[~cases["model"].str.startswith("sasrec")].assign(model="pop"), C.BEST_SASREC)


def test_gate_on_cases_pairs_examples_and_refuses_a_worse_candidate():
    rng = np.random.default_rng(0)
    good = np.where(rng.random(600) < 0.4, rng.integers(0, 10, 600), INF).astype(float)
    worse = np.where(rng.random(600) < 0.5, good, INF)
    cases = _cases({("valid", "gen"): list(worse), ("valid", "sasrec"): list(good)})
    ref, decision = C.gate(cases, "gen", C.BEST_SASREC, "valid")
    assert ref == "sasrec" and not decision.passed
    assert all(c.high < 0 for c in decision.comparisons)
    _, flipped = C.gate(cases.replace({"model": {"gen": "x", "sasrec": "gen"}}).replace({"model": {"x": "sasrec"}}),
                        "gen", "sasrec", "valid")
    assert flipped.passed and all(c.low > 0 for c in flipped.comparisons)
    with pytest.raises(ValueError, match="same examples"):
        C.gate(cases[~((cases["model"] == "gen") & (cases["example"] == 3))], "gen", "sasrec", "valid")


def test_compare_all_pairs_the_candidate_with_every_other_model():
    rng = np.random.default_rng(1)
    base = np.where(rng.random(400) < 0.4, rng.integers(0, 10, 400), INF).astype(float)
    cases = _cases({("test", "gen"): list(base), ("test", "pop"): [INF] * 400, ("test", "sasrec"): list(base)})
    table = C.compare_all(cases, "gen", "test", ("hr@10",), resamples=200).set_index("model")
    assert list(table.index) == ["pop", "sasrec"]
    assert table.loc["pop", "low"] > 0 and table.loc["sasrec", "difference"] == 0.0
