"""make evaluate's report: the sft_evaluation table as {split: {model: {scenario: metrics}}}."""

import pandas as pd

from orchestration.evaluate import metrics_report


def test_metrics_report_nests_split_model_and_scenario():
    table = pd.DataFrame({
        "split": ["valid", "test", "test"], "model": ["sasrec", "sasrec", "popularity"],
        "group": ["overall", "cart", "overall"], "n": [10, 4, 10],
        "hr@10": [0.5, 0.25, 0.1], "ndcg@10": [0.3, 0.2, 0.05],
    })
    report = metrics_report(table)
    assert report["test"]["sasrec"]["cart"] == {"n": 4, "hr@10": 0.25, "ndcg@10": 0.2}
    assert report["valid"]["sasrec"]["overall"]["hr@10"] == 0.5
    assert set(report["test"]) == {"sasrec", "popularity"}
