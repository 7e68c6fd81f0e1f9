"""Does RL post-training improve the recommender? RL variants vs their SFT model, paired, over seeds.

    python bench/rl_effect.py --data <data dir> [--seeds 0 1 2] [--variants JSON | --variants-file F] [--name N]

``<data dir>`` is a materialized data directory (``make demo``: ``data/``; ``make evaluate``:
``data/evaluate/<dataset>``) with ``sft_model``, ``reward_model``, ``training_examples`` and ``item_semantic_ids``.
Every variant is the ``rl`` section of params.yaml (``assets.rl.rl_run``) with the variant's overrides, e.g.
``{"default": {}, "beam_verif": {"group_sampling": "beam", "learned_weight": 0.0, "lr": 1e-4}}`` (RLRun fields and
RewardMix fields, flat). For each variant and seed (the RL seed: prompt and item sampling; the SFT model, prompts
and examples are fixed) one RL run is trained from the SFT model (models/rl/experiment.py) and both models are
scored on *every* validation and test example; reported per run:

    valid/test HR@10 and NDCG@10 of RL and SFT, the difference and its paired-bootstrap 95% interval (1000
    resamples), learned reward (sampled / of the served top 10), sequence KL(RL || SFT) on validation prompts,
    share of served items already in the short history, mean group hit share during training, seconds

and per variant the mean and std (over seeds) of the paired differences; ``improves`` = mean test difference >
its std for both NDCG@10 and HR@10 (the issue's criterion). Results: bench/results/rl_effect_<name>.json (name
defaults to the data directory's name). Threads: 1 (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.common import peak_rss_mb, write_results  # noqa: E402
from models.rl.experiment import measure, seed_summary  # noqa: E402
from orchestration.io_managers import read_value  # noqa: E402

SPLITS, METRICS = ("valid", "test"), ("ndcg@10", "hr@10")


def load_data_dir(data: Path) -> dict:
    """The four inputs of an RL experiment from a materialized data directory (the IO manager's layout)."""
    def one(asset: str, ext: str):
        path = data / asset / f"_.{ext}"
        if not path.is_file():
            raise ValueError(f"{data} has no {asset} ({path}); materialize it first (make demo / make evaluate)")
        return read_value(path.with_suffix(""), data.resolve()) if ext == "json" else pd.read_parquet(path)

    return {"sft_model": one("sft_model", "json"), "reward_model": one("reward_model", "json"),
            "training_examples": one("training_examples", "parquet"),
            "item_semantic_ids": one("item_semantic_ids", "parquet")}


def verdict(summary: pd.DataFrame) -> pd.DataFrame:
    """improves (issue criterion) per variant: mean test difference > std over seeds, NDCG@10 and HR@10."""
    out = summary.copy()
    ok = np.ones(len(out), dtype=bool)
    for metric in METRICS:
        mean, std = out[f"test_{metric}_diff_mean"], out[f"test_{metric}_diff_std"].fillna(np.inf)
        ok &= (mean > 0) & (mean > std)
    out["improves"] = ok
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", default='{"default": {}}', help="JSON {name: overrides}")
    parser.add_argument("--variants-file", type=Path, help="a JSON file {name: overrides} (instead of --variants)")
    parser.add_argument("--name", help="results name suffix (default: the data directory's name)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OXYREC_HOME", str(args.data.resolve()))

    from assets.rl import rl_experiment, rl_run  # noqa: E402  (settings read after OXYREC_HOME is set)
    from orchestration.settings import current_settings

    variants = json.loads(args.variants_file.read_text() if args.variants_file else args.variants)
    if not isinstance(variants, dict) or not variants:
        raise ValueError("--variants must be a non-empty JSON object {name: {field: value}}")
    settings = current_settings()
    inputs = load_data_dir(args.data)
    start = time.perf_counter()
    experiment = rl_experiment(inputs["sft_model"], inputs["reward_model"], inputs["training_examples"],
                               inputs["item_semantic_ids"], settings)
    before = experiment.before
    setup_seconds = time.perf_counter() - start
    name = args.name or args.data.resolve().name
    print(f"{name}: SFT valid HR@10 {before['hr10']:.4f} NDCG@10 {before['ndcg10']:.4f} reward {before['reward']:.4f} "
          f"({len(experiment.frames['valid'])} valid / {len(experiment.frames['test'])} test examples, "
          f"{setup_seconds:.0f} s setup)", flush=True)

    base = rl_run(settings.rl, settings.rl.seed if settings.rl.seed is not None else settings.seed)
    rows, runs = [], {}
    for variant, overrides in variants.items():
        runs[variant] = base.replace(**overrides).to_dict()
        for seed in args.seeds:
            run = base.replace(**overrides, seed=seed)
            row = {"variant": variant, **measure(experiment, run, resamples=args.resamples)}
            rows.append(row)
            if "test_hr@10_diff" in row:
                print(f"  {variant} seed {seed}: valid dNDCG {row['valid_ndcg@10_diff']:+.4f} dHR {row['valid_hr@10_diff']:+.4f}"
                      f" | test dNDCG {row['test_ndcg@10_diff']:+.4f} dHR {row['test_hr@10_diff']:+.4f} | reward "
                      f"{row['reward_sft']:.3f}->{row['reward_rl']:.3f} kl {row['kl_valid']:.3f} hit "
                      f"{row['group_hit_share']:.3f} ({row['train_seconds']:.0f}+{row['eval_seconds']:.0f} s)", flush=True)
            else:
                print(f"  {variant} seed {seed}: {row['status']}", flush=True)
    ok = [r for r in rows if "test_hr@10_diff" in r]
    summary = verdict(seed_summary(ok)) if ok else pd.DataFrame()
    keep = ["variant", "runs"] + [f"{s}_{m}_diff_{stat}" for s in SPLITS for m in METRICS for stat in ("mean", "std")] + [
        "reward_rl_mean", "kl_valid_mean", "history_overlap_rl_mean", "group_hit_share_mean", "train_seconds_mean",
        "improves"]
    if len(summary):
        print(summary[[c for c in keep if c in summary.columns]].to_string(index=False, float_format="%.4f"))
    results = {
        "command": "python bench/rl_effect.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": name, "load_average": os.getloadavg(), "threads": args.threads, "seeds": args.seeds,
        "sft": {"valid_hr@10": before["hr10"], "valid_ndcg@10": before["ndcg10"], "reward": before["reward"],
                "reward_at10": before["reward_at10"], "history_overlap": before["history_overlap"],
                "n_valid": len(experiment.frames["valid"]), "n_test": len(experiment.frames["test"]),
                "test": {m: float(np.mean(_metric(before["cases"], "test", m))) for m in METRICS}},
        "setup_seconds": round(setup_seconds, 1), "variants": runs, "runs": rows,
        "summary": summary.to_dict(orient="records"), "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_results(f"rl_effect_{name}", results)
    return results


def _metric(cases: pd.DataFrame, split: str, metric: str) -> np.ndarray:
    from models.eval.cases import per_example
    return per_example(cases.assign(model="m"), "m", split, [metric])[metric]


if __name__ == "__main__":
    main()
