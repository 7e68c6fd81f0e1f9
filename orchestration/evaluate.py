"""``make evaluate DATA=<dir>``: the whole graph on a dataset in the standard schema, then ``metrics.json``.

``DATA`` holds ``items``/``interactions`` (and optionally ``users``) as parquet or csv (models/data/loaders.py).
The Makefile points ``OXYREC_DATA_DIR`` at it and ``OXYREC_HOME`` at ``data/evaluate/<name of DATA>`` so the
default data directory is never touched. Everything before SFT runs as in ``make demo``; then the generator,
SASRec and the popularity baselines are trained and scored on the same leave-last-out split
(``sft_evaluation``), and their metrics are written per split, model and scenario:

    {"data": ..., "gate": {"passed": ..., ...}, "metrics": {split: {model: {scenario | "overall": {metric: v}}}}}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance

from .demo import print_summary, run_pipeline
from .settings import current_settings


def metrics_report(table: pd.DataFrame) -> dict:
    """{split: {model: {group: {metric: value}}}} from the sft_evaluation table."""
    metric_cols = [c for c in table.columns if c.startswith(("hr@", "ndcg@"))]
    out: dict = {}
    for row in table.to_dict(orient="records"):
        values = {"n": int(row["n"]), **{c: float(row[c]) for c in metric_cols}}
        out.setdefault(row["split"], {}).setdefault(row["model"], {})[str(row["group"])] = values
    return out


def gate_result(results) -> dict:
    """The SFT gate's outcome from the runs (``{"evaluated": False}`` if it never ran)."""
    for result in results:
        for event in result.get_asset_check_evaluations():
            if event.check_name == "sft_beats_baseline":
                return {"evaluated": True, "passed": bool(event.passed), "description": event.description,
                        **{k: v.value for k, v in event.metadata.items() if isinstance(v.value, (int, float, str))}}
    return {"evaluated": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: <data directory>/metrics.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(currently in beta|currently in preview).*")
    settings = current_settings()
    if settings.data.source != "files" or not settings.data.files_dir:
        print("make evaluate needs a dataset: make evaluate DATA=<dir with items.* and interactions.*>",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = run_pipeline(instance=DagsterInstance.get(), raise_on_error=False)
    print_summary(results)
    evaluation = settings.data_root / "sft_evaluation" / "_.parquet"
    if not evaluation.is_file() or len(results) < 4:
        print(f"\nevaluation FAILED before sft_evaluation was built ({len(results)} runs); see the errors above",
              file=sys.stderr)
        return 1
    table = pd.read_parquet(evaluation)
    report = {"data": str(settings.data.files_dir), "data_root": str(settings.data_root),
              "seed": settings.seed, "seconds": round(time.perf_counter() - start, 1),
              "gate": gate_result(results), "metrics": metrics_report(table)}
    out = args.out or settings.data_root / "metrics.json"
    out.write_text(json.dumps(report, indent=1))
    test = table[(table["split"] == "test") & (table["group"] == "overall")]
    print("\ntest split, all scenarios:")
    print(test[["model", "n", "hr@10", "ndcg@10"]].to_string(index=False))
    print(f"\nmetrics written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
