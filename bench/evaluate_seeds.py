"""``make evaluate`` for several model seeds on one dataset, and the mean ± std table of every model.

    python -m bench.evaluate_seeds --data ../shared/data/movielens100k [--seeds 0 1 2]

Each seed is one ``python -m orchestration.evaluate`` process with ``OXYREC_SEED`` set, exactly what
``make evaluate DATA=<dir> SEED=<n>`` runs (same data directory ``data/evaluate/<name>``, so the seed-independent
assets are reused). Every seed writes its own ``metrics_seed<n>.json`` there; this script then writes
``bench/results/evaluate_<name>.json``: per seed the test and validation HR@10 / NDCG@10 of every model, the
paired test intervals of the generator against each baseline, the wall seconds and stage seconds, and over the
seeds the mean and (sample) std. A seed whose evaluation fails is reported as failed and left out of the means.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from models.artifacts import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("hr@10", "ndcg@10")


def run_seed(data: Path, home: Path, seed: int) -> dict:
    """One ``orchestration.evaluate`` process; its metrics.json (or the failure)."""
    out = home / f"metrics_seed{seed}.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "OXYREC_DATA_DIR": str(data), "OXYREC_HOME": str(home), "OXYREC_SEED": str(seed)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestration.evaluate", "--out", str(out)], cwd=ROOT, env=env)
    wall = round(time.perf_counter() - start, 1)
    if proc.returncode != 0 or not out.is_file():
        return {"seed": seed, "failed": True, "returncode": proc.returncode, "wall_seconds": wall}
    return {**json.loads(out.read_text()), "wall_seconds": wall}


def overall(report: dict) -> dict:
    """{split: {model: {metric: value}}} of the all-scenario rows."""
    return {split: {model: {m: groups["overall"][m] for m in METRICS} for model, groups in models.items()}
            for split, models in report["metrics"].items()}


def aggregate(reports: list[dict]) -> dict:
    """Mean and sample std over the successful seeds, per split, model and metric."""
    ok = [overall(r) for r in reports if not r.get("failed")]
    out: dict = {}
    if not ok:
        return out
    for split, models in ok[0].items():
        for model in models:
            for m in METRICS:
                values = np.array([o[split][model][m] for o in ok if model in o.get(split, {})])
                out.setdefault(split, {}).setdefault(model, {})[m] = {
                    "mean": round(float(values.mean()), 4),
                    "std": round(float(values.std(ddof=1)), 4) if len(values) > 1 else None, "n_seeds": len(values)}
    return out


def markdown(summary: dict, split: str = "test") -> str:
    rows = ["| model | HR@10 | NDCG@10 |", "|---|---|---|"]
    for model, metrics in sorted(summary.get(split, {}).items(), key=lambda kv: -kv[1]["ndcg@10"]["mean"]):
        cells = [f"{metrics[m]['mean']:.4f} ± {metrics[m]['std'] or 0:.4f}" for m in METRICS]
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    data = args.data.resolve()
    home = ROOT / "data" / "evaluate" / data.name
    reports = []
    for seed in args.seeds:
        print(f"== seed {seed}", flush=True)
        reports.append(run_seed(data, home, seed))
    per_seed = [{"seed": r["seed"], "failed": r.get("failed", False), "wall_seconds": r["wall_seconds"],
                 **({} if r.get("failed") else {"metrics": overall(r), "paired_test": r["paired_test"],
                                                "stage_seconds": r["stage_seconds"], "gate": r["gate"],
                                                "sasrec_variants": r["sasrec_variants"],
                                                "config_hash": r["config_hash"], "budget": r["budget"]})}
                for r in reports]
    summary = aggregate(reports)
    result = {"data": data.name, "seeds": args.seeds, "machine": {"cpus": os.cpu_count(),
                                                                  "load_avg_end": os.getloadavg()},
              "summary": summary, "per_seed": per_seed}
    path = atomic_write_json(RESULTS / f"evaluate_{data.name}.json", result, indent=1, default=str)
    print(f"\ntest split, mean ± std over seeds {args.seeds}:\n{markdown(summary)}\n\nwritten: {path}")


if __name__ == "__main__":
    main()
