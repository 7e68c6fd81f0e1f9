"""SASRec (plain, and scenario-aware when the data has more than one scenario) on any standard-schema dataset.

Protocol: leave-last-out per user (ties by row order; last = test, second last = validation), full ranking
of the catalog (items file + any item of the interactions), early stopping on validation NDCG@10 with
``patience`` (the epoch cap only guards against a run that never stops). Reports mean ± std (ddof=1) over
the seeds of validation and test HR@1/5/10 and NDCG@5/10, with seen items kept (the main numbers) and
excluded, plus the best and run epochs, seconds and the per-epoch validation curves; most-popular alongside.
Writes ``bench/results/sasrec_<name of DATA>.json``.

    python -m bench.sasrec --data DIR --seeds 0 1 2
    python -m bench.sasrec --data DIR --seeds 0 --reference ref.json   # + the reference tool's numbers

``--reference`` takes JSON files written by an independent reference SASRec run on the same folder
(``sasrec_reference.py --out``); their per-seed numbers are copied into the result, labelled as the
reference's, next to ours for the same seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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

from bench.common import write_results  # noqa: E402
from models.data.loaders import find_table, load_dataset  # noqa: E402
from models.eval import encode_ids, leave_last_out, ranking_metrics  # noqa: E402
from models.lightning.sasrec_module import train_sasrec  # noqa: E402
from models.nn.popularity import MostPopular  # noqa: E402
from models.nn.sasrec import SASRecConfig  # noqa: E402

KS = (1, 5, 10)
NAMES = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")


def popularity(split, encoder) -> dict:
    pop = MostPopular.from_frame(split.train, encoder)
    cases = split.eval_cases("test")
    histories = [encoder.encode(h) for h in cases.histories]
    targets = encoder.encode(cases.targets)
    return {
        "seen_kept": ranking_metrics(pop.recommend(10, histories=histories), targets, KS),
        "seen_excluded": ranking_metrics(pop.recommend(10, histories=histories, exclude_seen=True), targets, KS),
    }


def summarize(runs: list[dict]) -> dict:
    """{stage: {seen_kept|seen_excluded: {metric: {"mean", "std"}}}} over the runs (std ddof=1, None for 1 run)."""
    out: dict = {}
    for stage in ("valid", "test"):
        for variant, prefix in (("seen_kept", stage), ("seen_excluded", f"{stage}_excl_seen")):
            cell = out.setdefault(stage, {}).setdefault(variant, {})
            for name in NAMES:
                values = np.array([r[f"{prefix}/{name}"] for r in runs])
                cell[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None}
    return out


def run_model(split, encoder, config: SASRecConfig, seeds: list[int], root: Path, label: str) -> dict:
    runs = []
    for seed in seeds:
        load_before = os.getloadavg()
        _, m = train_sasrec(split, replace(config, seed=seed), encoder=encoder, default_root_dir=root / f"{label}{seed}",
                            log=lambda line: print(f"  [{label} seed {seed}] {line}", flush=True))
        curve = [{k: round(float(r[k]), 5) for k in ("epoch", "train/loss", "val/hr@10", "val/ndcg@10", "seconds") if k in r}
                 for r in m.pop("curve")]
        runs.append({"seed": seed, **m, "curve": curve, "load_average_before": load_before,
                     "load_average_after": os.getloadavg()})
        print(f"{label} seed {seed}: test HR@10 {m['test/hr@10']:.4f} NDCG@10 {m['test/ndcg@10']:.4f} | valid HR@10 "
              f"{m['valid/hr@10']:.4f} NDCG@10 {m['valid/ndcg@10']:.4f} | best epoch {m['best_epoch']} of "
              f"{m['epochs']} ({'early stop' if m['stopped_early'] else 'CAP REACHED'}), {m['train_seconds']:.0f} s, "
              f"{m['seconds_per_epoch']:.1f} s/epoch", flush=True)
    return {
        "config": {**asdict(replace(config, seed=-1)), "seed": seeds},
        **summarize(runs),
        "best_epochs": [r["best_epoch"] for r in runs],
        "epochs": [r["epochs"] for r in runs],
        "all_stopped_early": all(r["stopped_early"] for r in runs),
        "train_seconds": [round(r["train_seconds"], 1) for r in runs],
        "seconds_per_epoch": [round(r["seconds_per_epoch"], 2) for r in runs],
        "runs": runs,
    }


def reference_runs(paths: list[Path], seeds: list[int]) -> dict:
    """Per-seed numbers of the reference tool's JSON outputs, for the seeds we ran, in our metric names."""
    per_seed, threads = {}, set()
    for path in paths:
        data = json.loads(path.read_text())
        threads.add(data["config"].get("threads"))
        for r in data["sasrec"]["per_seed"]:
            if r["seed"] in seeds:
                row = {"seed": r["seed"], "best_epoch": r["best_epoch"], "epochs": r["epochs_run"], "seconds": r["seconds"]}
                for stage in ("valid", "test"):
                    for variant, suffix in (("seen_kept", ""), ("seen_excluded", "_excl_seen")):
                        for name in NAMES:
                            row[f"{stage}{suffix}/{name}"] = r[stage][variant][name.upper()]
                per_seed[r["seed"]] = row
    runs = [per_seed[s] for s in seeds if s in per_seed]
    if not runs:
        return {}
    return {"label": "the independent reference SASRec (sasrec_reference.py, default settings), run on this machine",
            "seeds": [r["seed"] for r in runs], "threads": sorted(threads, key=str), **summarize(runs),
            "best_epochs": [r["best_epoch"] for r in runs], "epochs": [r["epochs"] for r in runs],
            "seconds": [r["seconds"] for r in runs]}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="directory with items.* and interactions.* (parquet|csv)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-epochs", type=int, default=SASRecConfig().max_epochs)
    ap.add_argument("--patience", type=int, default=SASRecConfig().patience)
    ap.add_argument("--window-stride", type=int, default=SASRecConfig().window_stride,
                    help="training-window stride; 0 = only the last window per user")
    ap.add_argument("--scenario", choices=["auto", "off", "only"], default="auto",
                    help="auto: the scenario-aware model too when the data has > 1 scenario; only: just that one")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--reference", type=Path, nargs="*", default=[], help="reference tool JSON output(s)")
    ap.add_argument("--name", default=None, help="result name (default: sasrec_<data directory name>)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stride = args.window_stride or None
    base = replace(SASRecConfig(), patience=args.patience, max_epochs=args.max_epochs, window_stride=stride)

    t0 = time.perf_counter()
    load_start = os.getloadavg()
    items, df, _ = load_dataset(args.data)
    split = leave_last_out(df)
    # the full catalog, as ranked by the reference: every item of the items file and of the interactions
    encoder = encode_ids(np.concatenate([items["item_id"].to_numpy(dtype=object), split.items.astype(object)]))
    n_scenarios = int(df["scenario"].nunique())
    print(f"{len(df)} interactions, {df.user_id.nunique()} users, {encoder.n_ids} items, {n_scenarios} scenario(s); "
          f"train/valid/test {len(split.train)}/{len(split.valid)}/{len(split.test)}", flush=True)
    pop = popularity(split, encoder)
    print("most popular (test):", {k: round(v, 4) for k, v in pop["seen_kept"].items()}, flush=True)

    models = {}
    with tempfile.TemporaryDirectory(prefix="sasrec_bench_") as tmp:
        if args.scenario != "only":
            models["sasrec"] = run_model(split, encoder, base, args.seeds, Path(tmp), "sasrec")
        if args.scenario == "only" or (args.scenario == "auto" and n_scenarios > 1):
            models["sasrec_scenario"] = run_model(split, encoder, replace(base, scenario_aware=True), args.seeds,
                                                  Path(tmp), "sasrec_scenario")

    name = args.name or f"sasrec_{args.data.resolve().name}"
    inter = find_table(args.data, "interactions")
    result = {
        "command": f"python -m bench.sasrec --data <DIR> --seeds {' '.join(map(str, args.seeds))}"
                   + (f" --max-epochs {args.max_epochs}" if args.max_epochs != SASRecConfig().max_epochs else "")
                   + (f" --patience {args.patience}" if args.patience != SASRecConfig().patience else ""),
        "data": {"name": args.data.resolve().name, "interactions_file": inter.name, "interactions_sha256": file_digest(inter),
                 "n_interactions": len(df), "n_users": int(df.user_id.nunique()), "n_items_ranked": encoder.n_ids,
                 "n_scenarios": n_scenarios},
        "protocol": "leave-last-out per user (ties by row order), full ranking of the catalog, test = last item, "
                    "validation = second last; early stopping on validation NDCG@10 (seen kept)",
        "seeds": args.seeds,
        "most_popular_test": pop,
        **models,
        "reference": reference_runs(args.reference, args.seeds),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    write_results(name, result)
    for label, m in models.items():
        t, v = m["test"]["seen_kept"], m["valid"]["seen_kept"]
        print(f"{label}: test HR@10 {t['hr@10']['mean']:.4f} ± {t['hr@10']['std'] or 0:.4f} NDCG@10 "
              f"{t['ndcg@10']['mean']:.4f} ± {t['ndcg@10']['std'] or 0:.4f} | valid HR@10 {v['hr@10']['mean']:.4f} "
              f"NDCG@10 {v['ndcg@10']['mean']:.4f} | best epochs {m['best_epochs']}, epochs {m['epochs']}")


if __name__ == "__main__":
    main()
