"""``make evaluate DATA=<dir> [SEED=n]``: the whole graph on a dataset in the standard schema, then ``metrics.json``.

``DATA`` holds ``items``/``interactions`` (and optionally ``users``) as parquet or csv (models/data/loaders.py).
The Makefile points ``OXYREC_DATA_DIR`` at it and ``OXYREC_HOME`` at ``data/evaluate/<name of DATA>``, so the
default data directory is never touched. The runs are recorded in the evaluation's own Dagster instance
(``<data directory>/dagster_home``), so the daily pipeline's UI never shows an evaluation dataset's assets as
the latest production materializations; browse an evaluation with
``DAGSTER_HOME=data/evaluate/<name>/dagster_home make ui``.

Everything before SFT runs as in ``make demo``; then the generator, the SASRec variants and the popularity
baselines are trained and scored on the same leave-last-out examples (``sft_evaluation``). ``metrics.json`` is
written only from an ``sft_evaluation`` materialized by *this* run (a stale file from an earlier run is removed
first, and a run that fails before the evaluation writes none):

    {"data", "data_root", "seed", "config_hash", "budget": {"sft", "sasrec", "rl"}, "seconds",
     "stage_seconds": {step: seconds}, "gate": {...}, "sasrec_variants": {name: {best_epoch, epochs, ...}},
     "instruction_coverage": {...}, "paired_test": [{model, metric, candidate, reference, difference, low, high,
     ratio}], "metrics": {split: {model: {scenario | "overall": {n, hr@k, ndcg@k}}}}}
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance

from assets.training import CANDIDATE
from models.artifacts import atomic_write_json
from models.eval.cases import compare_all, summary_table

from .demo import print_stage_times, print_summary, run_pipeline, stage_seconds
from .settings import Settings, current_settings

STAGES = ("ingest", "daily_instructions", "refresh_features", "train_sft")


def metrics_report(table: pd.DataFrame) -> dict:
    """{split: {model: {group: {metric: value}}}} from a summary table (models.eval.cases.summary_table)."""
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


def materialized_here(results, asset: str) -> dict | None:
    """The metadata of ``asset``'s materialization in these runs (None if none of them built it)."""
    for result in results:
        for event in result.get_asset_materialization_events():
            if event.asset_key.to_user_string() == asset:
                return {k: v.value for k, v in event.materialization.metadata.items()}
    return None


def config_hash(settings: Settings) -> str:
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]


def budget(settings: Settings) -> dict:
    sft = settings.sft
    return {
        "sft": {k: getattr(sft, k) for k in ("max_epochs", "limit_train_batches", "batch_size", "lr", "patience",
                                             "beam_width")},
        "sasrec": sft.sasrec.model_dump(),
        "rl": {k: getattr(settings.rl, k) for k in ("algorithm", "steps", "lr", "prompts_per_step", "group_size")},
    }


def evaluation_instance(settings: Settings) -> DagsterInstance:
    """The evaluation's own Dagster instance under the data directory (never the daily pipeline's)."""
    home = settings.data_root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(Path(__file__).with_name("dagster.yaml"), home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


def build_report(settings: Settings, results, cases: pd.DataFrame, instance: DagsterInstance, seconds: float) -> dict:
    gate = settings.gate
    paired = compare_all(cases, CANDIDATE, "test", gate.metrics, resamples=gate.resamples,
                         confidence=gate.confidence, seed=settings.seed).to_dict(orient="records")
    sasrec = materialized_here(results, "sasrec_baseline") or {}
    examples = materialized_here(results, "training_examples") or {}
    return {
        "data": str(settings.data.files_dir), "data_root": str(settings.data_root), "seed": settings.seed,
        "config_hash": config_hash(settings), "budget": budget(settings), "seconds": round(seconds, 1),
        "stage_seconds": stage_seconds(instance, results), "gate": gate_result(results),
        "sasrec_variants": sasrec.get("variants", ""),
        "instruction_coverage": examples.get("instruction_coverage", {}),
        "paired_test": paired, "metrics": metrics_report(summary_table(cases)),
    }


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
    out = args.out or settings.data_root / "metrics.json"
    out.unlink(missing_ok=True)  # a failed run must never leave an earlier run's metrics looking new
    start = time.perf_counter()
    instance = evaluation_instance(settings)
    results = run_pipeline(instance=instance, raise_on_error=False, stages=STAGES)
    print_summary(results)
    print_stage_times(instance, results)
    if materialized_here(results, "sft_evaluation") is None:
        print(f"\nevaluation FAILED: this run did not build sft_evaluation ({len(results)} runs); see the errors "
              "above. No metrics were written.", file=sys.stderr)
        return 1
    cases = pd.read_parquet(settings.data_root / "sft_evaluation" / "_.parquet")
    report = build_report(settings, results, cases, instance, time.perf_counter() - start)
    atomic_write_json(out, report, indent=1, default=str)
    table = summary_table(cases)
    test = table[(table["split"] == "test") & (table["group"] == "overall")]
    print("\ntest split, all scenarios:")
    print(test[["model", "n", "hr@10", "ndcg@10"]].to_string(index=False))
    print(f"\nmetrics written to {out} ({report['seconds']:.0f} s)")
    return 0 if all(r.success for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
