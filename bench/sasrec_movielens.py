"""Reproduce the MovieLens-100K reference numbers for most-popular and SASRec.

Protocol (/work/shared/data/movielens100k/README.md): leave-last-out per user (last = test, second last =
validation), rank all 1,682 items, SASRec hidden 64, 2 blocks, 1 head, max length 50, dropout 0.2,
Adam 1e-3, early stopping on validation NDCG@10. Writes ``bench/results/sasrec_movielens.json``.

    .venv/bin/python bench/sasrec_movielens.py                 # one seed
    .venv/bin/python bench/sasrec_movielens.py --seeds 0 1 2   # mean ± std over three seeds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from models.eval import encode_ids, leave_last_out, ranking_metrics  # noqa: E402
from models.lightning import train_sasrec  # noqa: E402
from models.nn.popularity import MostPopular  # noqa: E402
from models.nn.sasrec import SASRecConfig  # noqa: E402

DATA = Path("/work/shared/data/movielens100k/interactions.csv")
REFERENCE = {
    "most_popular": {"hr@10": 0.0498, "ndcg@10": 0.0224},
    "sasrec_seen_kept": {"hr@10": 0.1386, "hr@10_std": 0.0049, "ndcg@10": 0.0606, "ndcg@10_std": 0.0035},
    "sasrec_seen_excluded": {"hr@10": 0.2124, "hr@10_std": 0.0117, "ndcg@10": 0.1124, "ndcg@10_std": 0.0071},
}
KS = (1, 5, 10)


def load(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"interactions file not found: {path}")
    return pd.read_csv(path, dtype={"user_id": str, "item_id": str, "scenario": str})


def popularity(split, encoder) -> dict:
    pop = MostPopular.from_frame(split.train, encoder)
    cases = split.eval_cases("test")
    histories = [encoder.encode(h) for h in cases.histories]
    targets = encoder.encode(cases.targets)
    return {
        "seen_kept": ranking_metrics(pop.recommend(10, histories=histories), targets, KS),
        "seen_excluded": ranking_metrics(pop.recommend(10, histories=histories, exclude_seen=True), targets, KS),
    }


def summarize(runs: list[dict], prefix: str) -> dict:
    out: dict[str, float | None] = {}
    for k in KS:
        for name in (f"hr@{k}", f"ndcg@{k}"):
            values = np.array([r[f"{prefix}/{name}"] for r in runs])
            out[name] = float(values.mean())
            out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-epochs", type=int, default=SASRecConfig().max_epochs)
    ap.add_argument("--patience", type=int, default=SASRecConfig().patience)
    ap.add_argument("--window-stride", type=int, default=SASRecConfig().window_stride,
                    help="training-window stride; 0 = only the last window per user")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is ~3x faster than 2 on the shared 2-core machine; 0 = torch default)")
    ap.add_argument("--monitor", default="val/ndcg@10",
                    help="early-stopping metric: val/ndcg@10 (seen kept) or val/ndcg@10_excl_seen")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sasrec_movielens.json")
    ap.add_argument("--root-dir", type=Path, default=None, help="Lightning logs/checkpoints (default: a temp dir)")
    ap.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stride = args.window_stride or None
    base = replace(SASRecConfig(), patience=args.patience, max_epochs=args.max_epochs, window_stride=stride)

    t0 = time.perf_counter()
    df = load(args.data)
    split = leave_last_out(df)
    encoder = encode_ids(split.items)  # the full catalog: every item in the interactions
    prep_seconds = time.perf_counter() - t0
    print(f"{len(df)} interactions, {df.user_id.nunique()} users, {encoder.n_ids} items; "
          f"train/valid/test {len(split.train)}/{len(split.valid)}/{len(split.test)}")

    pop = popularity(split, encoder)
    print("most popular (test):", {k: round(v, 4) for k, v in pop["seen_kept"].items()})

    runs = []
    with tempfile.TemporaryDirectory(prefix="sasrec_ml100k_") as tmp:
        root = args.root_dir or Path(tmp)
        for seed in args.seeds:
            config = replace(base, seed=seed)
            _, m = train_sasrec(
                split, config, encoder=encoder, default_root_dir=root / f"seed{seed}",
                enable_progress_bar=args.progress, monitor=args.monitor,
            )
            m["seed"] = seed
            runs.append(m)
            print(f"seed {seed}: test HR@10 {m['test/hr@10']:.4f} NDCG@10 {m['test/ndcg@10']:.4f} | seen excluded "
                  f"HR@10 {m['test_excl_seen/hr@10']:.4f} NDCG@10 {m['test_excl_seen/ndcg@10']:.4f} | "
                  f"{m['epochs']} epochs (best {m['best_epoch']}), {m['train_seconds']:.0f} s")

    kept, excl = summarize(runs, "test"), summarize(runs, "test_excl_seen")
    result = {
        "dataset": str(args.data),
        "protocol": "leave-last-out per user (ties by row order), full ranking of all items, test = last item",
        "n_users": int(df.user_id.nunique()),
        "n_items": encoder.n_ids,
        "config": asdict(base),
        "seeds": args.seeds,
        "early_stopping_monitor": args.monitor,
        "most_popular": pop,
        "sasrec": {
            "seen_kept": kept,
            "seen_excluded": excl,
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
            "epochs": [r["epochs"] for r in runs],
            "best_epochs": [r["best_epoch"] for r in runs],
            "runs": runs,
        },
        "reference": REFERENCE,
        "delta_vs_reference": {
            "most_popular": {m: pop["seen_kept"][m] - REFERENCE["most_popular"][m] for m in ("hr@10", "ndcg@10")},
            "sasrec_seen_kept": {m: kept[m] - REFERENCE["sasrec_seen_kept"][m] for m in ("hr@10", "ndcg@10")},
            "sasrec_seen_excluded": {
                m: excl[m] - REFERENCE["sasrec_seen_excluded"][m] for m in ("hr@10", "ndcg@10")
            },
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "prep_seconds": prep_seconds,
        "total_seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(json.dumps(result["delta_vs_reference"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
