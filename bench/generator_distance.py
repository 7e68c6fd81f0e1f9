"""HR@10 of a trained generator and of the pipeline's SASRec by distance from the end of training: each user's
last train example (its target was trained on), the one before it, the validation example (1 step past the
training data) and the test example (2 steps past), seen kept and seen excluded (the full history).

    python -m bench.generator_distance --data data/evaluate/movielens100k --run <run dir with best.ckpt> \
        [--out bench/results/generator_variants/<data>/<name>_distance.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.generator_variants import seen_rows
from models.eval.diagnosis import full_histories, rank_metrics
from models.eval.generative import generator_ranked
from models.eval.metrics import target_ranks
from models.features.example_encoder import ExampleEncoder
from models.lightning.train import load_generator
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie


def example_sets(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """{name: frame row positions}: train_last2, train_last (per user, by position), valid, test."""
    pos = frame["position"].to_numpy()
    train = frame[frame["split"] == "train"]
    rank = train.groupby("user_id")["position"].rank(ascending=False, method="first").astype(int)
    out = {"train_last2": train.index[rank.to_numpy() == 2].to_numpy(), "train_last": train.index[rank.to_numpy() == 1].to_numpy()}
    for split in ("valid", "test"):
        out[split] = np.flatnonzero((frame["split"] == split).to_numpy())
    del pos
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    frame = pd.read_parquet(args.data / "training_examples" / "_.parquet").reset_index(drop=True)
    sid_table = SemanticIdTable.from_frame(pd.read_parquet(args.data / "item_semantic_ids" / "_.parquet"))
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    encoder = ExampleEncoder.load(args.run / "encoder.json", sid_table)
    model = load_generator(args.run / "best.ckpt")
    from models.lightning.sasrec_module import load_sasrec
    sasrec, ids = load_sasrec(args.data / "sasrec_baseline" / "sasrec.pt")
    index = pd.Index(np.asarray(sid_table.item_ids).astype(str))
    report: dict = {"run": args.run.name if args.run.name != "seed0" else args.run.parent.name, "beam": args.beam}
    for name, rows in example_sets(frame).items():
        part = frame.iloc[rows].reset_index(drop=True)
        tmp = frame.copy()
        tmp["split"] = np.where(np.isin(np.arange(len(frame)), rows), "__sel__", "other")
        encoded = dict(encoder.encode(part))
        encoded["exclude_items"] = seen_rows(tmp, "__sel__", sid_table)
        hist = [ids.encode(np.asarray(h, dtype=str), unknown="pad") for h in full_histories(frame, rows)]
        hist = [h[h > 0] for h in hist]
        targets = ids.encode(part["item_id"].astype(str).to_numpy(), unknown="pad")
        for excl in (False, True):
            ranked, tgt, _, _ = generator_ranked(model, encoded, trie, 10, args.beam, exclude_seen=excl)
            g = rank_metrics(target_ranks(ranked, np.where(tgt >= 0, tgt, -2)), (10,))
            s = rank_metrics(target_ranks(sasrec.recommend(hist, 10, exclude_seen=excl).numpy(),
                                          np.where(targets > 0, targets, -2)), (10,))
            key = f"{name}{'_excl_seen' if excl else ''}"
            report[key] = {"n": len(rows), "generator": g, "sasrec": s}
            print(key, len(rows), "generator HR@10 %.4f NDCG@10 %.4f" % (g["hr@10"], g["ndcg@10"]),
                  "| sasrec HR@10 %.4f NDCG@10 %.4f" % (s["hr@10"], s["ndcg@10"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
