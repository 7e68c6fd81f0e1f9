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

from models.eval.diagnosis import full_histories, rank_metrics
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
        encoded = dict(result.encoder.encode(part))
        encoded["exclude_items"] = seen_rows(frame, split, sid_table)
        for key, excl in ((split, False), (f"{split}_excl_seen", True)):
            t0 = time.perf_counter()
            ranked, targets, _, _ = generator_ranked(result.model, encoded, result.trie, 10, beam, exclude_seen=excl)
            ranks = target_ranks(ranked, np.where(targets >= 0, targets, -2))
            out[key] = {**rank_metrics(ranks, (1, 5, 10)), "eval_seconds": round(time.perf_counter() - t0, 1)}
            out[key]["ranks"] = {str(u): (int(r) if np.isfinite(r) else -1) for u, r in zip(part["user_id"], ranks)}
    return out


def seen_rows(frame: pd.DataFrame, split: str, sid_table: SemanticIdTable) -> torch.Tensor:
    """Long[N, E]: SID-table rows of every item each ``split`` example's user had before its target (the full
    history, not the capped long list), -1 padded, in the order of ``frame[frame.split == split]``."""
    rows = np.flatnonzero((frame["split"] == split).to_numpy())
    index = pd.Index(np.asarray(sid_table.item_ids).astype(str))
    hists = [index.get_indexer(np.asarray(h, dtype=str)) for h in full_histories(frame, rows)]
    width = max(1, max(len(h) for h in hists))
    out = np.full((len(hists), width), -1, dtype=np.int64)
    for i, h in enumerate(hists):
        out[i, : len(h)] = h
    return torch.from_numpy(out)


def baselines(data: Path, frame: pd.DataFrame, sid_table: SemanticIdTable) -> dict:
    """SASRec (the pipeline's sasrec_baseline weights) and most-popular (fitted on the train split's targets) on
    the same valid / test examples: metrics and per-user ranks, seen kept and seen excluded (the full history,
    as for the generator)."""
    from models.lightning.sasrec_module import load_sasrec
    from models.nn.popularity import MostPopular

    sasrec, ids = load_sasrec(data / "sasrec_baseline" / "sasrec.pt")
    train = frame[frame["split"] == "train"]
    pop = MostPopular.from_frame(train, ids) if hasattr(MostPopular, "from_frame") else None
    out: dict = {"sasrec_weights": "sasrec_baseline/sasrec.pt"}
    for split in ("valid", "test"):
        rows = np.flatnonzero((frame["split"] == split).to_numpy())
        part = frame.iloc[rows].reset_index(drop=True)
        hist = [ids.encode(np.asarray(h, dtype=str), unknown="pad") for h in full_histories(frame, rows)]
        hist = [h[h > 0] for h in hist]
        targets = ids.encode(part["item_id"].astype(str).to_numpy(), unknown="pad")
        for excl in (False, True):
            lists = {"sasrec": sasrec.recommend(hist, 10, exclude_seen=excl).cpu().numpy()}
            if pop is not None:
                lists["popularity"] = pop.recommend(10, histories=hist, exclude_seen=excl)
            for name, ranked in lists.items():
                ranks = target_ranks(ranked, np.where(targets > 0, targets, -2))
                key = f"{split}_excl_seen" if excl else split
                entry = {**rank_metrics(ranks, (1, 5, 10)),
                         "ranks": {str(u): (int(r) if np.isfinite(r) else -1) for u, r in zip(part["user_id"], ranks)}}
                out.setdefault(name, {})[key] = entry
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
    parser.add_argument("--baselines", action="store_true",
                        help="score SASRec (sasrec_baseline) and most-popular instead of training; --name names the file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame = pd.read_parquet(args.data / "training_examples" / "_.parquet")
    sid_table = SemanticIdTable.from_frame(pd.read_parquet(args.data / "item_semantic_ids" / "_.parquet"))
    out_path = RESULTS / args.data.name / f"{args.name}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if args.baselines:
        report = {"data": args.data.name, "name": args.name, **baselines(args.data, frame, sid_table)}
        out_path.write_text(json.dumps(report, indent=1))
        for name in ("sasrec", "popularity"):
            for key, v in report.get(name, {}).items():
                print(name, key, {m: round(x, 4) for m, x in v.items() if m != "ranks"})
        print(f"wrote {out_path}")
        return
    report = {"data": args.data.name, "name": args.name, "gen": args.gen, "sft": args.sft, "beam": args.beam,
              "threads": args.threads, "load_avg_start": os.getloadavg(), "seeds": {}}
    for seed in args.seeds:
        run_dir = args.runs / args.data.name / args.name / f"seed{seed}"
        entry = run_variant(frame, sid_table, args.gen, args.sft, seed, args.beam, run_dir)
        report["seeds"][str(seed)] = entry
        print(json.dumps({"name": args.name, "seed": seed, "train_s": entry["train_wall_seconds"],
                          "cpu_s": entry["cpu_seconds"],
                          "epochs": len(entry["curve"]), "valid": {k: v for k, v in entry["valid"].items() if k != "ranks"},
                          "test": {k: v for k, v in entry["test"].items() if k != "ranks"},
                          "test_excl_seen": {k: v for k, v in entry["test_excl_seen"].items() if k != "ranks"}}),
              flush=True)
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
