"""Where does the generator lose to SASRec? Diagnosis on the same examples of a materialized data directory.

    python -m bench.generator_diagnosis --data data/evaluate/movielens100k [--generator CKPT --encoder JSON]
        [--sasrec WEIGHTS | --train-sasrec '{"max_epochs": 200, "patience": 20}'] [--beams 20 50 100]
        [--exact-users 943] [--split test] [--threads 1]

Inputs (defaults: what ``make evaluate`` / ``make demo`` left in the data directory): ``training_examples``,
``item_semantic_ids``, ``interaction_log``, the newest ``sft_model/runs/*/best.ckpt`` (+ its ``encoder.json``)
and ``sasrec_baseline/sasrec.pt`` (or a SASRec trained here with the pipeline's config plus ``--train-sasrec``
overrides, e.g. the reference budget). Every model ranks the full catalog for every example of ``--split``,
seen items kept; baselines are fitted on the events before the split's targets (``log_without``).

Output ``bench/results/generator_diagnosis_<data name>.json`` (models/eval/diagnosis.py has the formulas):

* ``overall``: HR@k / NDCG@k (k = 1, 5, 10, 20) of the generator (served beam = first of ``--beams``), SASRec,
  popularity, and ``seen_share_top10`` (top-10 slots spent on items already in the history); ``bootstrap``: generator - SASRec, paired over examples (95% interval);
* ``by_history`` / ``by_popularity`` / ``by_repeat`` / ``by_scenario``: the same per bucket of history length
  (events before the target, all scenarios), train count of the target item, target already in the history or
  not, scenario;
* ``beam_recall``: share of targets anywhere in the beam for each beam width, and the HR@10 of each width;
* ``search``: exact ranking (teacher-forced log p(item) of every catalog item, for the first ``--exact-users``
  examples) vs beam search: HR@10 of both and the share of targets the beam loses;
* ``sid``: collisions, per-level codebook usage and prefix-tree branching, weighted by train events;
* ``curves``: validation curves logged while training (the generator's val_hr10 per epoch, SASRec's
  val/ndcg@10 per epoch) and whether each was still rising when training stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.common import write_results
from models.decoding.beam_search import score_all_items
from models.eval.diagnosis import (
    HISTORY_EDGES,
    POPULARITY_EDGES,
    beam_recall,
    bucket_table,
    bucketize,
    curve_summary,
    in_history,
    is_repeat,
    rank_metrics,
    search_loss,
    sid_usage,
)
from models.eval.generative import baseline_ranked, generator_ranked, log_without
from models.eval.metrics import target_ranks
from models.eval.significance import paired_bootstrap
from models.eval.split import encode_ids, leave_last_out
from models.lightning.generator_data import ExampleEncoder, _event_order_key
from models.lightning.sasrec_module import load_sasrec, train_sasrec
from models.lightning.train import load_generator
from models.nn.sasrec import SASRecConfig
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie

KS = (1, 5, 10, 20)


def newest_run(data: Path) -> Path:
    runs = sorted((data / "sft_model" / "runs").glob("*/best.ckpt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no sft_model/runs/*/best.ckpt under {data}; pass --generator and --encoder")
    return runs[-1]


def history_lengths(frame: pd.DataFrame, part: pd.DataFrame) -> np.ndarray:
    """Events before each example of ``part`` (all scenarios): the earliest example's own history length plus
    the user's examples before it (every event after a user's first one is an example in the training frame)."""
    full = frame.assign(_key=_event_order_key(frame)).sort_values(["user_id", "_key"], kind="stable")
    first_len = full.groupby("user_id")["long_len"].first()
    full["_n"] = full.groupby("user_id").cumcount() + full["user_id"].map(first_len).to_numpy()
    keyed = part.assign(_key=_event_order_key(part))
    merged = keyed.merge(full[["user_id", "_key", "_n"]], on=["user_id", "_key"], how="left")
    return merged["_n"].to_numpy(dtype=np.int64)


def read_curve(csv_dir: Path, column: str) -> list[float]:
    files = sorted(csv_dir.glob("**/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        return []
    m = pd.read_csv(files[-1])
    if column not in m.columns:
        return []
    return [float(v) for v in m.dropna(subset=[column]).groupby("epoch")[column].last().to_numpy()]


def interval(c) -> dict:
    """The keys this benchmark's results have always used, from the shared paired bootstrap."""
    return {"mean_diff": c.difference, "lo": c.low, "hi": c.high, "n": c.n, "n_boot": c.resamples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--generator", type=Path, default=None)
    parser.add_argument("--encoder", type=Path, default=None)
    parser.add_argument("--sasrec", type=Path, default=None)
    parser.add_argument("--train-sasrec", type=json.loads, default=None)
    parser.add_argument("--beams", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--exact-users", type=int, default=300)
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None, help="result name suffix (default: the data directory's name)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    data = args.data
    frame = pd.read_parquet(data / "training_examples" / "_.parquet")
    sid_table = SemanticIdTable.from_frame(pd.read_parquet(data / "item_semantic_ids" / "_.parquet"))
    log = pd.read_parquet(data / "interaction_log" / "_.parquet")
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    ckpt = args.generator or newest_run(data)
    encoder = ExampleEncoder.load(args.encoder or ckpt.parent / "encoder.json", sid_table)
    model = load_generator(ckpt)

    part = frame[frame["split"] == args.split].reset_index(drop=True)
    held_out = frame[frame["split"].isin(["valid", "test"])]
    train_log = log_without(log, held_out if args.split == "valid" else part)

    # SASRec: the pipeline's weights, or trained here on the same leave-last-out split
    sasrec_info: dict = {}
    if args.train_sasrec is not None:
        from orchestration.settings import current_settings

        cfg = SASRecConfig(seed=current_settings().seed, **current_settings().sft.sasrec.model_dump())
        cfg = dataclasses.replace(cfg, **args.train_sasrec)
        split = leave_last_out(log)
        ids = encode_ids(split.items)
        root = data / "bench_diagnosis_sasrec"
        sasrec, metrics = train_sasrec(split, cfg, encoder=ids, default_root_dir=root)
        sasrec_info = {"config": dataclasses.asdict(cfg), **{k: v for k, v in metrics.items()
                                                              if isinstance(v, (int, float))}}
        sasrec_curve = read_curve(root, "val/ndcg@10")
    else:
        sasrec, ids = load_sasrec(args.sasrec or data / "sasrec_baseline" / "sasrec.pt")
        sasrec_curve = read_curve(data / "sasrec_baseline" / "lightning", "val/ndcg@10")
        sasrec_info = {"weights": str(args.sasrec or data / "sasrec_baseline" / "sasrec.pt")}

    # ranked lists on the same examples
    encoded = encoder.encode(part)
    lists: dict[int, np.ndarray] = {}
    beam_seconds = {}
    targets = None
    for beam in args.beams:
        t0 = time.perf_counter()
        ranked, targets, scen_ids, _ = generator_ranked(model, encoded, trie, beam, beam)
        beam_seconds[beam] = round(time.perf_counter() - t0, 1)
        lists[beam] = ranked
    served = args.beams[0]
    base_lists, base_targets, _ = baseline_ranked(train_log, part, sid_table, max(KS),
                                                  sasrec_models={"sasrec": (sasrec, ids)})
    assert np.array_equal(np.where(targets >= 0, targets, -1), base_targets)
    tgt = np.where(targets >= 0, targets, -2)
    ranks = {"generator": target_ranks(lists[served][:, : max(KS)] if served >= max(KS) else lists[served], tgt),
             "sasrec": target_ranks(base_lists["sasrec"], tgt),
             "popularity": target_ranks(base_lists["popularity"], tgt)}
    if served < max(KS):  # the served list is shorter than 20: ranks beyond it are misses
        ranks["generator"] = np.where(ranks["generator"] < served, ranks["generator"], np.inf)
    ks_served = tuple(k for k in KS if k <= served)
    overall = {name: rank_metrics(r, ks_served if name == "generator" else KS) for name, r in ranks.items()}
    ids = np.asarray(sid_table.item_ids).astype(str)
    top10 = {"generator": lists[served][:, :10], "sasrec": base_lists["sasrec"][:, :10],
             "popularity": base_lists["popularity"][:, :10]}
    for name, rows in top10.items():  # slots spent on items the user already had (unfilled slots count as not seen)
        overall[name]["seen_share_top10"] = float(in_history(np.where(rows >= 0, ids[rows], ""), part["long_item_ids"]).mean())
    hits = {name: (r < 10).astype(float) for name, r in ranks.items()}
    gains = {name: np.where(r < 10, 1.0 / np.log2(np.where(r < 10, r, 0) + 2.0), 0.0) for name, r in ranks.items()}
    bootstrap = {m: interval(paired_bootstrap(v["generator"], v["sasrec"], metric=m, resamples=2000))
                 for m, v in (("hr@10", hits), ("ndcg@10", gains))}

    # buckets
    hist_len = history_lengths(frame, part)
    train_counts = train_log["item_id"].astype(str).value_counts()
    target_pop = part["item_id"].astype(str).map(train_counts).fillna(0).to_numpy()
    repeat = is_repeat(part["long_item_ids"], part["item_id"].astype(str))
    scen_names = np.asarray(encoder.scenarios, dtype=object)[scen_ids]
    hist_labels = bucketize(hist_len, HISTORY_EDGES)
    pop_labels = bucketize(target_pop, POPULARITY_EDGES)
    tables = {
        "by_history": bucket_table(ranks, hist_labels, (10,), list(bucketize(HISTORY_EDGES, HISTORY_EDGES))),
        "by_popularity": bucket_table(ranks, pop_labels, (10,), list(bucketize(POPULARITY_EDGES, POPULARITY_EDGES))),
        "by_repeat": bucket_table(ranks, np.where(repeat, "repeat", "new"), (10,), ["new", "repeat"]),
        "by_scenario": bucket_table(ranks, scen_names, (10,)),
    }

    # beam recall and search errors
    recall = beam_recall(lists, targets)
    recall_hr10 = {b: float((target_ranks(lists[b][:, :10], tgt) < 10).mean()) for b in lists}
    n_exact = min(args.exact_users, len(part))
    t0 = time.perf_counter()
    sub = {k: v[:n_exact] for k, v in encoded.items()}
    scores = torch.cat([score_all_items(model, {k: v[i : i + 16] for k, v in sub.items()}, sid_table.codes)
                        for i in range(0, n_exact, 16)])
    t_idx = torch.as_tensor(tgt[:n_exact]).clamp(min=0)
    ts = scores.gather(1, t_idx[:, None])
    ar = torch.arange(scores.shape[1])[None]
    exact_rank = ((scores > ts) | ((scores == ts) & (ar < t_idx[:, None]))).sum(1).double().numpy()
    exact_rank = np.where(tgt[:n_exact] >= 0, exact_rank, np.inf)
    search = {str(b): search_loss(exact_rank, target_ranks(lists[b][:n_exact], tgt[:n_exact]), 10) for b in lists}
    search["seconds"] = round(time.perf_counter() - t0, 1)
    search["exact"] = rank_metrics(exact_rank, KS)
    search["sasrec_same_users"] = rank_metrics(ranks["sasrec"][:n_exact], KS)

    counts = sid_table.to_frame()["item_id"].astype(str).map(train_counts).fillna(0).to_numpy()
    sid = sid_usage(sid_table.codes, sid_table.vocab_sizes, weights=counts)

    gen_curve = read_curve(ckpt.parent / "logs", "val_hr10")
    result = {
        "data": str(data.name), "split": args.split, "n_examples": int(len(part)), "served_beam": served,
        "generator": {"checkpoint": str(ckpt), "config": model.cfg.to_dict(), "n_parameters": model.num_parameters},
        "sasrec": sasrec_info,
        "overall": overall, "bootstrap_generator_minus_sasrec": bootstrap,
        **{k: t.round(4).to_dict(orient="records") for k, t in tables.items()},
        "beam_recall": {str(b): {"recall": recall[b], "hr@10": recall_hr10[b], "seconds": beam_seconds[b]}
                        for b in lists},
        "search": search, "sid": sid,
        "curves": {"generator_val_hr10": gen_curve, "generator": curve_summary(gen_curve),
                   "sasrec_val_ndcg10": sasrec_curve, "sasrec": curve_summary(sasrec_curve)},
        "history_length": {"mean": float(hist_len.mean()), "median": float(np.median(hist_len))},
        "repeat_share": float(repeat.mean()),
        "seconds": round(time.perf_counter() - t_start, 1), "load_avg": os.getloadavg(),
    }
    write_results(f"generator_diagnosis_{args.name or data.name}", result)
    print(json.dumps({"overall": overall, "beam_recall": result["beam_recall"],
                      "search": {k: v for k, v in search.items()}}, indent=1))


if __name__ == "__main__":
    main()
