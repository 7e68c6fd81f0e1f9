"""Paired bootstrap (models/eval/significance.py) of generator runs against SASRec on the same test examples,
from per-user ranks written by bench.generator_variants (generator) and its --baselines mode (SASRec).

    python -m bench.generator_paired --baselines <baselines.json> --results <variant.json> [<more seeds>.json]
        [--out <json>]

Several --results files of the same configuration (e.g. seed 0 and seeds 1 2 run separately) are pooled by seed.

Per seed and for seen kept / seen excluded: HR@10 and NDCG@10 differences (generator - SASRec) with 95% CIs;
with several seeds also the mean ± std (ddof=1) of the test metrics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models.eval.significance import paired_bootstrap


def per_example(ranks: dict, users: list[str]) -> dict[str, np.ndarray]:
    r = np.array([ranks[u] for u in users], dtype=float)
    hit = (r >= 0) & (r < 10)
    return {"hr@10": hit.astype(float), "ndcg@10": np.where(hit, 1.0 / np.log2(np.where(hit, r, 0) + 2.0), 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baselines", type=Path, required=True)
    ap.add_argument("--results", type=Path, nargs="+", required=True)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    base = json.loads(args.baselines.read_text())["sasrec"]
    runs = [json.loads(p.read_text()) for p in args.results]
    configs = {json.dumps([r["gen"], r["sft"], r["beam"]], sort_keys=True) for r in runs}
    if len(configs) != 1:
        raise SystemExit("--results must share one configuration (gen, sft, beam)")
    res = {"name": runs[0]["name"], "seeds": {}}
    for r in runs:
        for seed, e in r["seeds"].items():
            if seed in res["seeds"]:
                raise SystemExit(f"seed {seed} appears twice")
            res["seeds"][seed] = e
    report: dict = {"candidate": [r["name"] for r in runs], "reference": "sasrec (sasrec_baseline)", "seeds": {},
                    "summary": {}}
    for key in ("test", "test_excl_seen"):
        users = sorted(base[key]["ranks"])
        ref = per_example(base[key]["ranks"], users)
        vals = {"hr@10": [], "ndcg@10": []}
        for seed, e in res["seeds"].items():
            cand = per_example(e[key]["ranks"], users)
            for m in ("hr@10", "ndcg@10"):
                c = paired_bootstrap(cand[m], ref[m], metric=m, resamples=args.resamples, seed=0).as_dict()
                report["seeds"].setdefault(seed, {}).setdefault(key, {})[m] = c
                vals[m].append(float(cand[m].mean()))
                print(seed, key, m, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items()})
        report["summary"][key] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                                      "n_seeds": len(v), "sasrec": float(ref[m].mean())} for m, v in vals.items()}
    print(json.dumps(report["summary"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
