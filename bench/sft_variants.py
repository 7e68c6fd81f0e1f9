"""SFT variants of the generator on a materialized training set: valid and test HR/NDCG, full catalog.

    python -m bench.sft_variants --data data --variants '{"recent10": {"n_recent": 10}, "recent0": {"n_recent": 0}}' \
        --epochs 4 [--batches N] [--out bench/results/sft_variants.json]

``--data`` is a data directory after ``make demo`` (it reads ``training_examples`` and ``item_semantic_ids``);
each variant is the demo generator config with the given GeneratorConfig fields replaced, trained with the
demo SFT settings (batch 256, lr 1e-3, warmup 100, cosine) for ``--epochs`` epochs (``--batches`` caps the
batches per epoch), then scored by trie-constrained beam search (beam 20) on every validation and test
example. Runs resume from their last checkpoint under ``<out dir>/sft_variants/<variant>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import pandas as pd

from models.eval.generative import evaluate_generator
from models.lightning.train import SFTConfig, train_generator
from models.nn.config import GeneratorConfig
from models.semantic_ids import SemanticIdTable
from orchestration.partitions import SCENARIOS  # the configured scenarios, as the sft_model asset uses them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--variants", type=json.loads, default={"recent10": {"n_recent": 10}, "recent0": {}})
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sft_variants.json"))
    args = parser.parse_args()

    frame = pd.read_parquet(args.data / "training_examples" / "_.parquet")
    sid_table = SemanticIdTable.from_frame(pd.read_parquet(args.data / "item_semantic_ids" / "_.parquet"))
    base = GeneratorConfig(max_short=20, max_long=100, seed=0)
    sft = SFTConfig(max_epochs=args.epochs, limit_train_batches=args.batches, limit_val_batches=4, batch_size=256,
                    lr=1e-3, warmup_steps=100, patience=2, beam_width=20, seed=0)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name, fields in args.variants.items():
        start = time.perf_counter()
        run = train_generator(frame, sid_table, SCENARIOS, dataclasses.replace(base, **fields), sft,
                              args.out.parent / "sft_variants" / name)
        entry = {"fields": fields, "epochs": args.epochs, "batches_per_epoch": args.batches,
                 "seconds": round(time.perf_counter() - start, 1), "load_avg": os.getloadavg()[0],
                 "val_hr10_per_epoch": [h.get("val_hr10") for h in run.history]}
        for split in ("valid", "test"):
            part = frame[frame["split"] == split].reset_index(drop=True)
            _, table = evaluate_generator(run.model, run.encoder.encode(part), run.trie, sid_table, beam_width=20,
                                          scenario_names=run.encoder.scenarios)
            entry[split] = table.round(4).to_dict(orient="records")
        results[name] = entry
        print(name, json.dumps({s: [r for r in entry[s] if r["group"] == "overall"] for s in ("valid", "test")}))
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
