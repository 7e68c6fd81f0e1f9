"""Offline evaluation of the generator (trie-constrained beam search over the full catalog) and of baselines.

Every model ranks the whole catalog (the SemanticIdTable's items; item index = table row = trie leaf item) for
each example and is scored with :mod:`models.eval.metrics`: with r_b the 0-based rank of example b's target,

    HR@k = mean_b 1[r_b < k],   NDCG@k = mean_b 1[r_b < k] / log2(r_b + 2)

overall and per scenario (:func:`per_group_metrics`). Seen items are NOT excluded (a user may buy an item
again). A target missing from the catalog counts as a miss (reported as ``n_unknown_targets``).

Generator: ``constrained_beam_search(model, batch, trie, beam_width, top_k=max(ks))`` per chunk of
``batch_size`` examples. Examples without history, profile or instruction still get a full list: the encoder
always sees the scenario and (default, learnable) instruction tokens.

Baselines (:func:`evaluate_baselines`), fitted on the train interactions only:

* ``popularity``: items by train count (ties by catalog order), the same list for everyone;
* ``popularity_per_scenario``: the counts of the example's scenario (global counts for unseen scenarios);
* ``sasrec`` (optional): a trained :class:`models.nn.sasrec.SASRec` with its IdEncoder, reading the example's
  ``long_item_ids`` (oldest first, all scenarios) as the history.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from models.decoding.beam_search import constrained_beam_search
from models.eval.metrics import DEFAULT_KS, per_case_metrics, per_group_metrics
from models.eval.split import IdEncoder, encode_ids
from models.nn.popularity import MostPopular
from models.semantic_ids.codebook import SemanticIdTable
from models.semantic_ids.trie import SIDTrie

__all__ = ["baseline_ranked_lists", "compare_models", "evaluate_baselines", "evaluate_generator", "generator_ranked_lists", "iter_batches",
           "log_without", "summarize"]


def iter_batches(batches: Mapping[str, torch.Tensor] | Iterable[Mapping[str, torch.Tensor]], batch_size: int):
    """Chunks of ``batch_size`` rows of one encoded batch dict, or the dicts of an iterable (e.g. a DataLoader)."""
    if isinstance(batches, Mapping):
        n = int(next(iter(batches.values())).shape[0])
        for start in range(0, n, batch_size):
            yield {k: v[start : start + batch_size] for k, v in batches.items()}
    else:
        yield from batches


def summarize(ranked: np.ndarray, targets: np.ndarray, groups: np.ndarray, ks: Sequence[int]) -> tuple[dict, pd.DataFrame]:
    """(overall {hr@k, ndcg@k, n}, per-group DataFrame with an ``overall`` row) of ranked lists [N, K]."""
    targets = np.where(np.asarray(targets) >= 0, targets, -2)  # -1 marks unfilled slots: never a hit
    table = per_group_metrics(ranked, targets, groups, ks)
    overall = {k: float(v.mean()) for k, v in per_case_metrics(ranked, targets, ks).items()}
    overall["n"] = int(len(targets))
    return overall, table


def generator_ranked_lists(
    model,
    frame_encoded_batches: Mapping[str, torch.Tensor] | Iterable[Mapping[str, torch.Tensor]],
    trie: SIDTrie,
    beam_width: int,
    top_k: int,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ranked item indices [N, top_k] of trie-constrained beam search, target items [N] (-1 unknown), scenario
    ids [N]) for encoded examples; targets from ``target_item``, else ``trie.lookup(target_sids)``."""
    dev = next(model.parameters()).device
    ranked, targets, groups = [], [], []
    for batch in iter_batches(frame_encoded_batches, batch_size):
        if "target_item" in batch:
            tgt = batch["target_item"].cpu()
        elif "target_sids" in batch:
            tgt = trie.lookup(batch["target_sids"].cpu().long())
        else:
            raise ValueError("encoded batches need 'target_item' or 'target_sids' to be evaluated")
        inputs = {k: v.to(dev) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        items, _ = constrained_beam_search(model, inputs, trie, beam_width, top_k=top_k)
        ranked.append(items.cpu().numpy())
        targets.append(tgt.numpy())
        groups.append(batch["scenario"].cpu().numpy())
    if not ranked:
        raise ValueError("generator_ranked_lists: no examples")
    return np.concatenate(ranked), np.concatenate(targets), np.concatenate(groups)


def evaluate_generator(
    model,
    frame_encoded_batches: Mapping[str, torch.Tensor] | Iterable[Mapping[str, torch.Tensor]],
    trie: SIDTrie,
    sid_table: SemanticIdTable,
    ks: Sequence[int] = DEFAULT_KS,
    beam_width: int = 20,
    batch_size: int = 256,
    scenario_names: Sequence[str] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """HR@k / NDCG@k of the generator on encoded examples (``ExampleEncoder.encode`` output, or an iterable of
    such dicts). Targets come from ``target_item`` (else ``trie.lookup(target_sids)``); groups are the scenario
    names (``scenario_names[scenario]``, e.g. ``encoder.scenarios``) or the scenario ids.

    Returns (overall dict with hr@k, ndcg@k, n, n_unknown_targets, seconds, examples_per_s; per-scenario
    DataFrame ``group, n, hr@k, ndcg@k`` with an ``overall`` row)."""
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > beam_width:
        raise ValueError(f"ks must be positive and <= beam_width={beam_width}, got {ks}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if trie.num_items != len(sid_table):
        raise ValueError(f"trie has {trie.num_items} items but the SID table has {len(sid_table)}")
    t0 = time.perf_counter()
    ranked_a, targets_a, group_ids = generator_ranked_lists(model, frame_encoded_batches, trie, beam_width,
                                                            max(ks), batch_size)
    seconds = time.perf_counter() - t0
    names = np.asarray(scenario_names, dtype=object)[group_ids] if scenario_names is not None else group_ids
    overall, table = summarize(ranked_a, targets_a, names, ks)
    overall.update(n_unknown_targets=int((targets_a < 0).sum()), seconds=seconds,
                   examples_per_s=len(targets_a) / max(seconds, 1e-9))
    return overall, table


def baseline_ranked_lists(
    train_log: pd.DataFrame,
    test_frame: pd.DataFrame,
    sid_table: SemanticIdTable,
    k: int,
    *,
    item_col: str = "item_id",
    scenario_col: str = "scenario",
    sasrec=None,
    sasrec_encoder: IdEncoder | None = None,
    batch_size: int = 256,
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """({name: ranked SID-table rows [N, k]} for popularity, per-scenario popularity and optionally SASRec,
    target rows [N] (-1 = not in the catalog), train interactions outside the catalog); see
    :func:`evaluate_baselines`."""
    for name, frame, cols in (("train_log", train_log, (item_col, scenario_col)),
                              ("test_frame", test_frame, (item_col, scenario_col))):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing}; has {list(frame.columns)}")
    if test_frame.empty:
        raise ValueError("test_frame is empty")
    catalog = IdEncoder(ids=sid_table.item_ids, offset=1)  # index j + 1 = table row j (the trie's item index)
    train_items = catalog.encode(train_log[item_col].astype(str).to_numpy(), unknown="pad")
    known = train_items > 0  # interactions with items outside the catalog cannot be recommended
    pop = MostPopular.fit(train_items[known], catalog.n_ids,
                          scenarios=train_log[scenario_col].astype(str).to_numpy()[known])
    scen = test_frame[scenario_col].astype(str).to_numpy()
    targets = catalog.encode(test_frame[item_col].astype(str).to_numpy(), unknown="pad") - 1  # -> table row, -1
    out = {}
    for name, per in (("popularity", False), ("popularity_per_scenario", True)):
        out[name] = pop.recommend(k, scenarios=scen, per_scenario=per) - 1
    if sasrec is not None:
        if sasrec_encoder is None:
            raise ValueError("sasrec needs sasrec_encoder (the IdEncoder it was trained with)")
        if "long_item_ids" not in test_frame.columns:
            raise ValueError("SASRec evaluation reads test_frame.long_item_ids (oldest first)")
        hist = [np.asarray([] if h is None else h, dtype=object).astype(str) for h in test_frame["long_item_ids"]]
        hist = [h[h > 0] for h in (sasrec_encoder.encode(h, unknown="pad") for h in hist)]
        ranked = sasrec.recommend(hist, k, batch_size=batch_size).cpu().numpy()
        # SASRec indices -> raw ids -> table rows, so every model is scored on the same item space
        out["sasrec"] = catalog.encode(sasrec_encoder.decode(ranked.ravel()).astype(str), unknown="pad").reshape(ranked.shape) - 1
    return out, targets, int((~known).sum())


def evaluate_baselines(
    train_log: pd.DataFrame,
    test_frame: pd.DataFrame,
    sid_table: SemanticIdTable,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    item_col: str = "item_id",
    scenario_col: str = "scenario",
    sasrec=None,
    sasrec_encoder: IdEncoder | None = None,
    batch_size: int = 256,
) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Popularity (global, per scenario) and optionally SASRec on ``test_frame`` (e.g. the test split of the
    training frame), fitted on ``train_log`` (train interactions: ``item_id`` + ``scenario``; e.g. the train
    split's target rows). Returns name -> (overall dict, per-scenario DataFrame), like :func:`evaluate_generator`."""
    ks = tuple(int(k) for k in ks)
    lists, targets, n_unknown = baseline_ranked_lists(
        train_log, test_frame, sid_table, max(ks), item_col=item_col, scenario_col=scenario_col, sasrec=sasrec,
        sasrec_encoder=sasrec_encoder, batch_size=batch_size)
    scen = test_frame[scenario_col].astype(str).to_numpy()
    out = {}
    for name, ranked in lists.items():
        out[name] = summarize(ranked, targets, scen, ks)
        if name.startswith("popularity"):
            out[name][0]["n_train_unknown_items"] = n_unknown
    return out


def log_without(interaction_log: pd.DataFrame, held_out: pd.DataFrame) -> pd.DataFrame:
    """``interaction_log`` minus the interactions that are targets of ``held_out`` (rows of a training frame:
    ``user_id``, ``item_id``, ``target_timestamp``): what a baseline may be fitted on before those targets."""
    keys = held_out[["user_id", "item_id", "target_timestamp"]].rename(columns={"target_timestamp": "timestamp"})
    keys = keys.astype({"user_id": str, "item_id": str}).drop_duplicates().assign(_held_out=True)
    log = interaction_log.astype({"user_id": str, "item_id": str})
    marked = log.merge(keys, on=["user_id", "item_id", "timestamp"], how="left")
    return marked[marked["_held_out"].isna()].drop(columns="_held_out").reset_index(drop=True)


def compare_models(
    generators: Mapping[str, tuple[object, Mapping[str, torch.Tensor]]],
    frame: pd.DataFrame,
    train_log: pd.DataFrame,
    trie: SIDTrie,
    sid_table: SemanticIdTable,
    *,
    beam_width: int = 20,
    scenario_names: Sequence[str] | None = None,
    sasrec=None,
    sasrec_encoder: IdEncoder | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> tuple[dict[str, dict], pd.DataFrame]:
    """Every model on the same examples: ``generators`` maps a name to (model, its encoded ``frame``); the
    baselines (popularity, per-scenario popularity, optional SASRec) are fitted on ``train_log``.

    Returns ({model: overall metrics}, one per-scenario table with a ``model`` column)."""
    overall, tables = {}, []
    for name, (model, encoded) in generators.items():
        overall[name], table = evaluate_generator(model, encoded, trie, sid_table, ks=ks, beam_width=beam_width,
                                                  scenario_names=scenario_names)
        tables.append(table.assign(model=name))
    baselines = evaluate_baselines(train_log, frame, sid_table, ks, sasrec=sasrec, sasrec_encoder=sasrec_encoder)
    for name, (metrics, table) in baselines.items():
        overall[name] = metrics
        tables.append(table.assign(model=name))
    table = pd.concat(tables, ignore_index=True)
    return overall, table[["model"] + [c for c in table.columns if c != "model"]]
