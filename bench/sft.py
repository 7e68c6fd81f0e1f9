"""SFT benchmark: generator training throughput and full-catalog beam-search evaluation time on CPU.

    python bench/sft.py [--users 2000] [--events 10] [--limit-train-batches 40] [--epochs 1] [--beam 20]

Data: a synthetic frame in the Feast training schema (feature_repo/README.md), ``users x events`` examples
(default 20,000), over a random 5,000-item SID catalog (3 levels x 256 codes + disambiguation, as in
bench/decoding.py). User u prefers two level-0 code groups (80% of events from them), has profile fields
age_band / region / segment and, for 60% of users, a reasoning-instruction embedding near its first group's
prototype. Leave-last-out split per user (last = test, second last = valid).

Model: demo size (d_model 128, 2 encoder + 2 decoder layers, dense FFN, IGR on), AdamW + warmup/cosine.

Measured (``bench/results/sft.json``):
* encode: ExampleEncoder fit + encode of all splits (examples/s);
* train: samples/s over training batches only (forward, backward, optimizer; timed per batch by a callback),
  plus the wall time of ``train_generator`` (includes the in-training validation on ``--limit-val-batches``);
* eval: ``evaluate_generator`` over the whole validation split (beam ``--beam``, top 10): seconds, users/s,
  HR@k / NDCG@k, against the popularity baselines of ``evaluate_baselines``.
The machines have 2 cores shared with other jobs; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import peak_rss_mb, write_results  # noqa: E402
from bench.decoding import random_codes  # noqa: E402
from models.eval.generative import evaluate_baselines, evaluate_generator  # noqa: E402
from models.lightning.generator_data import EncoderConfig, ExampleEncoder, split_frames  # noqa: E402
from models.lightning.train import SFTConfig, train_generator  # noqa: E402
from models.nn import GeneratorConfig  # noqa: E402
from models.semantic_ids import SemanticIdTable  # noqa: E402

SCENARIOS = ("homepage", "search", "cart")


def synthetic_frame(n_users: int, n_events: int, table: SemanticIdTable, seed: int = 0,
                    n_short: int = 20, n_long: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids, codes = table.item_ids, table.codes
    group = codes[:, 0]
    members = [np.flatnonzero(group == g) for g in range(int(group.max()) + 1)]
    nonempty = np.array([g for g, m in enumerate(members) if len(m)])
    protos = rng.standard_normal((len(members), 384)).astype(np.float32)
    flat_sids = {i: c.tolist() for i, c in zip(ids, codes)}
    rows = []
    for u in range(n_users):  # a benchmark fixture: plain loops are fine here
        prefs = rng.choice(nonempty, 2, replace=False)
        scen_p = rng.dirichlet(np.ones(len(SCENARIOS)))
        items = []
        for _ in range(n_events):
            if rng.random() < 0.8:
                g = prefs[int(rng.random() < 0.3)]
                items.append(ids[rng.choice(members[g])])
            else:
                items.append(ids[rng.integers(len(ids))])
        scen = rng.choice(SCENARIOS, n_events, p=scen_p)
        emb = None
        if rng.random() < 0.6:
            v = protos[prefs[0]] + 0.5 * rng.standard_normal(384).astype(np.float32)
            emb = (v / np.linalg.norm(v)).astype(np.float32)
        profile = [f"age_band={rng.integers(5)}", f"region=r{rng.integers(10)}", f"segment=s{prefs[0] % 16}"]
        for t in range(n_events):
            short = [items[j] for j in range(t) if scen[j] == scen[t]][-n_short:]
            long = items[:t][-n_long:]
            rows.append({
                "user_id": f"u{u:05d}", "scenario": str(scen[t]), "item_id": items[t],
                "event_timestamp": pd.Timestamp(1_700_000_000 + 3600 * t, unit="s", tz="UTC"),
                "split": "test" if t == n_events - 1 else "valid" if t == n_events - 2 else "train",
                "profile_fields": profile, "short_item_ids": short,
                "short_sids": [c for i in short for c in flat_sids[i]], "short_len": len(short),
                "long_item_ids": long, "long_len": len(long), "sid_codes": flat_sids[items[t]],
                "instruction_embedding": emb, "has_instruction": emb is not None,
            })
    return pd.DataFrame(rows)


class BatchTimer(L.Callback):
    """Wall time of training batches (forward + backward + step) and of validation runs."""

    def __init__(self) -> None:
        self.train_s, self.samples, self.batches, self.val_s = 0.0, 0, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_s += time.perf_counter() - self._t
        self.samples += int(batch["scenario"].shape[0])
        self.batches += 1

    def on_validation_start(self, trainer, pl_module):
        self._v = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        self.val_s += time.perf_counter() - self._v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--limit-train-batches", type=int, default=40, help="0 = the whole train split")
    ap.add_argument("--limit-val-batches", type=int, default=2, help="in-training validation; 0 = all")
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--eval-batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--out-dir", type=Path, default=None, help="checkpoints/logs (default: a temp dir)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    codes, vocab = random_codes(args.items)
    table = SemanticIdTable(np.array([f"it{j:05d}" for j in range(args.items)]), codes, "bench", vocab[:-1])
    frame = synthetic_frame(args.users, args.events, table)
    build_s = time.perf_counter() - t0
    parts = split_frames(frame)
    print(f"{len(frame)} examples ({', '.join(f'{k} {len(v)}' for k, v in parts.items())}), {len(table)} items, "
          f"vocab {table.vocab_sizes}; built in {build_s:.1f} s")

    base = GeneratorConfig(d_model=128, n_heads=4, enc_layers=2, dec_layers=2, ffn="dense", dropout=0.1)
    t0 = time.perf_counter()
    enc = ExampleEncoder.fit(parts["train"], table, SCENARIOS, EncoderConfig.from_generator(base))
    encoded = {k: enc.encode(v) for k, v in parts.items()}
    encode_s = time.perf_counter() - t0
    print(f"encoder fit + encode: {encode_s:.2f} s ({len(frame) / encode_s:.0f} examples/s)")

    sft = SFTConfig(max_epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                    lr=2e-3, warmup_steps=20, beam_width=args.beam, enable_progress_bar=False,
                    limit_train_batches=args.limit_train_batches or None,
                    limit_val_batches=args.limit_val_batches or None)
    timer = BatchTimer()
    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        out = args.out_dir or Path(tmp)
        t0 = time.perf_counter()
        res = train_generator(frame, table, SCENARIOS, base, sft, out, callbacks=[timer])
        fit_s = time.perf_counter() - t0
    train_sps = timer.samples / timer.train_s
    print(f"train: {timer.samples} samples in {timer.batches} batches, {timer.train_s:.1f} s -> {train_sps:.0f} samples/s;"
          f" in-fit validation {timer.val_s:.1f} s; train_generator wall {fit_s:.1f} s")

    model = res.model
    t0 = time.perf_counter()
    overall, per_scen = evaluate_generator(model, encoded["valid"], res.trie, table, beam_width=args.beam,
                                           batch_size=args.eval_batch_size, scenario_names=enc.scenarios)
    eval_s = time.perf_counter() - t0
    print(f"eval (valid, {overall['n']} users, beam {args.beam}): {eval_s:.1f} s ({overall['n'] / eval_s:.1f} users/s); "
          f"HR@10 {overall['hr@10']:.4f} NDCG@10 {overall['ndcg@10']:.4f}")
    baselines = evaluate_baselines(parts["train"], parts["valid"], table)
    print("popularity HR@10:", {k: round(v[0]["hr@10"], 4) for k, v in baselines.items()})

    write_results("sft", {
        "data": {"examples": len(frame), "users": args.users, "events_per_user": args.events, "items": len(table),
                 "vocab_sizes": list(table.vocab_sizes), "splits": {k: len(v) for k, v in parts.items()},
                 "build_seconds": build_s},
        "model": {**res.generator_config.to_dict(), "n_parameters": model.num_parameters},
        "sft_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(sft).items()},
        "encode": {"seconds": encode_s, "examples_per_s": len(frame) / encode_s},
        "train": {"samples": timer.samples, "batches": timer.batches, "batch_seconds": timer.train_s,
                  "samples_per_s": train_sps, "in_fit_validation_seconds": timer.val_s,
                  "train_generator_wall_seconds": fit_s, "history": res.history},
        "eval_valid": {"beam_width": args.beam, "batch_size": args.eval_batch_size, "seconds": eval_s,
                       "users_per_s": overall["n"] / eval_s, "metrics": overall,
                       "per_scenario": per_scen.to_dict(orient="records")},
        "baselines_valid": {k: v[0] for k, v in baselines.items()},
        "load_average_at_end": os.getloadavg(),
        "peak_rss_mb": peak_rss_mb(),
        "note": "1 short epoch (limit_train_batches) on a synthetic frame: throughput numbers, not model quality",
    })


if __name__ == "__main__":
    main()
