"""bench/evaluate_seeds.py: means and stds over the seeds' metrics.json, failed seeds left out."""

import pytest

from bench.evaluate_seeds import aggregate, markdown


def report(hr: float, ndcg: float) -> dict:
    groups = {"overall": {"n": 10, "hr@10": hr, "ndcg@10": ndcg}, "cart": {"n": 4, "hr@10": 0.0, "ndcg@10": 0.0}}
    return {"metrics": {"test": {"gen": groups, "pop": groups}, "valid": {"gen": groups}}}


def test_mean_and_sample_std_over_successful_seeds():
    summary = aggregate([report(0.1, 0.05), report(0.3, 0.07), {"seed": 2, "failed": True}])
    assert summary["test"]["gen"]["hr@10"]["mean"] == pytest.approx(0.2)
    assert summary["test"]["gen"]["hr@10"]["std"] == pytest.approx(0.1414, abs=1e-4)  # ddof 1, not the cart row
    assert summary["test"]["gen"]["hr@10"]["n_seeds"] == 2 and summary["valid"]["gen"]["ndcg@10"]["mean"] == 0.06
    assert "| gen | 0.2000 ± 0.1414 |" in markdown(summary)
    assert aggregate([{"failed": True}]) == {}
