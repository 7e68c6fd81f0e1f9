"""Generator variants on a materialized data directory, with per-example test ranks for paired comparisons.

    python -m bench.generator_variants --data data/evaluate/movielens100k --name seq \
        --gen '{"history_encoder": "causal", "max_long": 50}' --sft '{"train_positions": "all", "max_epochs": 20}' \
        [--seeds 0 1 2] [--beam 20] [--threads 1]

The base configs are the pipeline's (``params.yaml`` ``sft:`` section, exactly as the ``sft_model`` asset builds
them); ``--gen`` / ``--sft`` replace GeneratorConfig / SFTConfig fields. Per seed: training (early stopping on
validation HR@10 as configured), the learning curve (validation HR@10 / NDCG@10 per epoch), train seconds per
epoch (train batches only, from a callback) and in all, then trie-constrained beam search (``--beam``, the
served beam) over every validation and test example: HR@k / NDCG@k and each test example's rank (-1 = not in
the top 10) keyed by user, for paired bootstraps against other models. Writes
``bench/results/generator_variants/<data name>/<name>.json``; run directories go to ``--runs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import torch

from models.eval.diagnosis import rank_metrics
from models.eval.generative import generator_ranked
from models.eval.metrics import target_ranks
from models.lightning.train import train_generator
from models.semantic_ids import SemanticIdTable

RESULTS = Path(__file__).resolve().parent / "results" / "generator_variants"


class EpochTimer(L.Callback):
    """Wall and CPU seconds of every training epoch (train batches only, validation excluded). On a shared machine
    the process CPU time (one thread) is the load-independent cost: wall time ~ CPU time on an idle core."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(round(time.perf_counter() - self._t0, 2))
        self.cpu_seconds.append(round(time.process_time() - self._c0, 2))


def base_configs():
    """(GeneratorConfig, SFTConfig) of the pipeline's params.yaml, as the sft_model asset builds them."""
    from assets.training import configs
    from orchestration.settings import current_settings

    return configs(SimpleNamespace(settings=current_settings()))


def run_variant(frame: pd.DataFrame, sid_table: SemanticIdTable, gen_fields: dict, sft_fields: dict, seed: int,
                beam: int, run_dir: Path) -> dict:
    gen, sft = base_configs()
    gen = dataclasses.replace(gen, **{**gen_fields, "seed": seed})
    sft = dataclasses.replace(sft, **{"enable_progress_bar": False, **sft_fields, "seed": seed})
    scenarios = sorted(frame["scenario"].astype(str).unique())
    timer = EpochTimer()
    start, cpu0 = time.perf_counter(), time.process_time()
    result = train_generator(frame, sid_table, scenarios, gen, sft, run_dir, callbacks=[timer])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    out = {"seed": seed, "generator_config": result.generator_config.to_dict(), "sft_config": dataclasses.asdict(sft),
           "n_parameters": int(result.model.num_parameters), "train_wall_seconds": round(result.train_seconds, 1),
           "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "epoch_train_seconds": timer.seconds,
           "epoch_train_cpu_seconds": timer.cpu_seconds,
           "curve": [{k: h.get(k) for k in ("epoch", "step", "val_hr10", "val_ndcg10", "train_loss", "val_loss")}
                     for h in result.history], "best_val_hr10": result.best_score, "load_avg": os.getloadavg()}
    for split in ("valid", "test"):
        part = frame[frame["split"] == split].reset_index(drop=True)
        t0 = time.perf_counter()
        ranked, targets, _, _ = generator_ranked(result.model, result.encoder.encode(part), result.trie, 10, beam)
        ranks = target_ranks(ranked, np.where(targets >= 0, targets, -2))
        out[split] = {**rank_metrics(ranks, (1, 5, 10)), "eval_seconds": round(time.perf_counter() - t0, 1)}
        out[split]["ranks"] = {str(u): (int(r) if np.isfinite(r) else -1) for u, r in zip(part["user_id"], ranks)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--gen", type=json.loads, default={})
    parser.add_argument("--sft", type=json.loads, default={})
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=Path("data/bench_runs/generator_variants"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame = pd.read_parquet(args.data / "training_examples" / "_.parquet")
    sid_table = SemanticIdTable.from_frame(pd.read_parquet(args.data / "item_semantic_ids" / "_.parquet"))
    out_path = RESULTS / args.data.name / f"{args.name}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = {"data": args.data.name, "name": args.name, "gen": args.gen, "sft": args.sft, "beam": args.beam,
              "threads": args.threads, "load_avg_start": os.getloadavg(), "seeds": {}}
    for seed in args.seeds:
        run_dir = args.runs / args.data.name / args.name / f"seed{seed}"
        entry = run_variant(frame, sid_table, args.gen, args.sft, seed, args.beam, run_dir)
        report["seeds"][str(seed)] = entry
        print(json.dumps({"name": args.name, "seed": seed, "train_s": entry["train_wall_seconds"],
                          "cpu_s": entry["cpu_seconds"],
                          "epochs": len(entry["curve"]), "valid": {k: v for k, v in entry["valid"].items() if k != "ranks"},
                          "test": {k: v for k, v in entry["test"].items() if k != "ranks"}}), flush=True)
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out_path)
    report["load_avg_end"] = os.getloadavg()
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
