"""Valid vs test per-example comparison (HR@10 by bucket) of models scored by bench.generator_variants.

    python -m bench.generator_gap --data data/evaluate/movielens100k \
        --results bench/results/generator_variants/movielens100k/<name>.json ... [--out <json>]

Buckets per example: time gap to the previous event (0 s = a same-second tie), history length, the target's train
popularity, and whether the newest history item (for test: the validation target) shares the target's second.
Every model's valid and test ranks (seen kept and seen excluded when present) are bucketed the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

GAP_EDGES = [0, 1, 60, 3600, 86400, np.inf]
POP_EDGES = [0, 50, 100, 200, 400, np.inf]
LEN_EDGES = [0, 20, 50, 100, np.inf]


def example_features(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame[["user_id", "item_id", "target_timestamp", "position", "split", "long_len"]].copy()
    f = f.sort_values(["user_id", "position"]).reset_index(drop=True)
    f["gap_s"] = f["target_timestamp"] - f.groupby("user_id")["target_timestamp"].shift(1)
    pop = f.loc[f["split"] == "train", "item_id"].value_counts()
    f["train_pop"] = f["item_id"].map(pop).fillna(0).astype(int)
    return f


def model_ranks(path: Path) -> dict[str, dict[str, dict]]:
    """{model label: {split key: {user: rank}}} from a generator_variants result (one label per seed) or the
    --baselines file (one label per baseline)."""
    r = json.loads(path.read_text())
    out = {}
    if "seeds" in r:
        for seed, e in r["seeds"].items():
            out[f"{r['name']}/seed{seed}"] = {k: v["ranks"] for k, v in e.items() if isinstance(v, dict) and "ranks" in v}
    else:
        for name in ("sasrec", "popularity"):
            if name in r:
                out[name] = {k: v["ranks"] for k, v in r[name].items()}
    return out


def bucket_rates(part: pd.DataFrame, col: str, edges) -> dict:
    b = pd.cut(part[col], edges, right=False)
    g = part.groupby(b, observed=False)["hit"].agg(["size", "mean"])
    return {str(k): {"n": int(v["size"]), "hr10": round(float(v["mean"]), 4)} for k, v in g.iterrows()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--results", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    f = example_features(pd.read_parquet(args.data / "training_examples" / "_.parquet"))
    report: dict = {"examples": {}}
    for split in ("valid", "test"):
        p = f[f["split"] == split]
        report["examples"][split] = {
            "n": len(p), "tie_with_previous": round(float((p["gap_s"] == 0).mean()), 4),
            "gap_below_60s": round(float((p["gap_s"] < 60).mean()), 4), "median_gap_s": float(p["gap_s"].median()),
            "median_train_pop": float(p["train_pop"].median()), "train_pop_below_100": round(float((p["train_pop"] < 100).mean()), 4),
            "median_long_len": float(p["long_len"].median())}
    models = {}
    for path in args.results:
        models.update(model_ranks(path))
    report["models"] = {}
    for label, splits in models.items():
        for key, ranks in splits.items():
            split = key.split("_")[0]
            part = f[f["split"] == split].copy()
            part["hit"] = [0 <= ranks.get(str(u), -1) < 10 for u in part["user_id"]]
            report["models"].setdefault(label, {})[key] = {
                "hr10": round(float(part["hit"].mean()), 4), "by_gap_s": bucket_rates(part, "gap_s", GAP_EDGES),
                "by_train_pop": bucket_rates(part, "train_pop", POP_EDGES),
                "by_long_len": bucket_rates(part, "long_len", LEN_EDGES)}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    for label, d in report["models"].items():
        for key, v in d.items():
            print(f"{label:45s} {key:16s} HR@10 {v['hr10']:.4f}  gap: " + " ".join(
                f"{b['hr10']:.3f}" for b in v["by_gap_s"].values()) + "  pop: " + " ".join(
                f"{b['hr10']:.3f}" for b in v["by_train_pop"].values()) + "  len: " + " ".join(
                f"{b['hr10']:.3f}" for b in v["by_long_len"].values()))
    print(json.dumps(report["examples"]))


if __name__ == "__main__":
    main()
