"""Decoding benchmark: trie allowed-mask lookups and trie-constrained beam search latency (CPU, in-process).

    python bench/decoding.py [--runs 50] [--trie-reps 200] [--quick] [--out bench/results/decoding.json]

1. Trie: random catalogs of 5,000 and 1,000,000 items with 3 levels x 256 codes plus a disambiguation level
   (D = largest collision group). For each depth, ``allowed_mask`` on a batch of 512 valid prefix nodes:
   median / p99 over ``--trie-reps`` calls (target: median < 1 ms). Also ``advance`` and build time.
2. Beam search: demo-size generator (d_model 128, 2 encoder + 2 decoder layers, dense FFN, IGR on), full
   histories (8 profile fields, 20 short, 100 long items), on the 5,000-item catalog; beam 16/64/256 x batch
   1/8, median and p99 ms over ``--runs`` runs after warm-up.

The machines have 2 cores shared with other jobs, so numbers are noisy; the JSON records the thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.decoding import constrained_beam_search  # noqa: E402
from models.nn import GeneratorConfig, OxygenGenerator  # noqa: E402
from models.semantic_ids.trie import SIDTrie  # noqa: E402


def random_codes(n: int, k: int = 256, levels: int = 3, seed: int = 0) -> tuple[np.ndarray, tuple[int, ...]]:
    """Random RQ codes + a disambiguation level (rank inside each group of equal codes)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, k, (n, levels))
    order = np.lexsort(base.T[::-1])
    s = base[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(1)
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - start
    codes = np.concatenate([base, rank[:, None]], 1)
    return codes, (k,) * levels + (int(rank.max()) + 1,)


def timed(fn, reps: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts = np.asarray(ts)
    return {"median_ms": float(np.median(ts)), "p99_ms": float(np.percentile(ts, 99)), "n": int(reps)}


def bench_trie(n_items: int, reps: int, batch: int = 512, seed: int = 0) -> dict:
    codes, vocab = random_codes(n_items, seed=seed)
    t0 = time.perf_counter()
    trie = SIDTrie.from_codes(codes, vocab)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed)
    depths = {}
    for d in range(len(vocab)):
        nodes = torch.randint(0, trie.num_nodes(d), (batch,), generator=g)
        tokens = torch.randint(0, vocab[d], (batch,), generator=g)
        depths[str(d)] = {
            "form": "dense" if trie.is_dense(d) else "csr",
            "nodes": trie.num_nodes(d),
            "vocab": vocab[d],
            "allowed_mask": timed(lambda: trie.allowed_mask(nodes, d), reps),
            "advance": timed(lambda: trie.advance(nodes, tokens, d), reps),
        }
    worst = max(v["allowed_mask"]["median_ms"] for v in depths.values())
    return {"n_items": n_items, "vocab_sizes": list(vocab), "batch": batch, "build_s": build_s,
            "depths": depths, "worst_depth_median_ms": worst, "meets_1ms_target": worst < 1.0}


def demo_batch(codes: np.ndarray, cfg: GeneratorConfig, b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(codes)
    return {
        "scenario": torch.randint(0, cfg.n_scenarios, (b,), generator=g),
        "profile": torch.randint(1, cfg.profile_vocab_size, (b, cfg.n_profile_fields), generator=g),
        "instruction_emb": torch.nn.functional.normalize(torch.randn(b, cfg.instruction_dim, generator=g), dim=-1),
        "has_instruction": torch.ones(b, dtype=torch.bool),
        "short_sids": c[torch.randint(0, len(c), (b, cfg.max_short), generator=g)],
        "short_mask": torch.ones(b, cfg.max_short, dtype=torch.bool),
        "long_sids": c[torch.randint(0, len(c), (b, cfg.max_long), generator=g)],
        "long_mask": torch.ones(b, cfg.max_long, dtype=torch.bool),
    }


def bench_beam(runs: int, beams=(16, 64, 256), batches=(1, 8), n_items: int = 5000) -> dict:
    codes, vocab = random_codes(n_items, seed=1)
    trie = SIDTrie.from_codes(codes, vocab)
    cfg = GeneratorConfig(vocab_sizes=vocab, d_model=128, n_heads=4, enc_layers=2, dec_layers=2)
    model = OxygenGenerator(cfg).eval()
    results = []
    for b in batches:
        batch = demo_batch(codes, cfg, b)
        for w in beams:
            r = timed(lambda: constrained_beam_search(model, batch, trie, beam_width=w, top_k=min(w, 10)), runs)
            results.append({"batch": b, "beam": w, **r})
            print(f"beam={w:4d} batch={b}: median {r['median_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms", flush=True)
    return {"n_items": n_items, "vocab_sizes": list(vocab), "model": cfg.to_dict(),
            "n_parameters": model.num_parameters, "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--trie-reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is robust on the shared 2-core box)")
    ap.add_argument("--quick", action="store_true", help="5k-item trie only, 10 runs (smoke test)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decoding.json")
    args = ap.parse_args()
    runs, reps = (10, 20) if args.quick else (args.runs, args.trie_reps)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "trie": [],
    }
    for n in (5000,) if args.quick else (5000, 1_000_000):
        r = bench_trie(n, reps)
        out["trie"].append(r)
        print(f"trie {n} items: build {r['build_s']:.2f} s, worst-depth allowed_mask median {r['worst_depth_median_ms']:.3f} ms", flush=True)
    with torch.no_grad():
        out["beam_search"] = bench_beam(runs)
    out["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
