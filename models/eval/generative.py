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
  ``long_item_ids`` (oldest first, all scenarios) as the history; a scenario-aware variant also reads the
  example's scenario (the request's, where the target happens).

:func:`compare_models` keeps every model's outcome per example (the *cases*: ``model, example, user_id, scenario,
rank``, rank = 0-based position of the target in the model's top-k list, ``inf`` when absent), so paired
statistics (:mod:`models.eval.significance`) and any breakdown can be computed from one table;
:func:`models.eval.cases.summary_table` derives the usual per-scenario metrics from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from models.decoding.beam_search import constrained_beam_search
from models.eval.metrics import DEFAULT_KS, per_case_metrics, per_group_metrics, target_ranks
from models.eval.split import IdEncoder
from models.nn.popularity import MostPopular
from models.semantic_ids.codebook import SemanticIdTable
from models.semantic_ids.trie import SIDTrie

__all__ = ["baseline_ranked", "compare_models", "evaluate_baselines", "evaluate_generator", "evaluate_splits",
           "generator_ranked", "iter_batches", "log_without", "summarize"]


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


def generator_ranked(model, frame_encoded_batches, trie: SIDTrie, k: int, beam_width: int = 20,
                     batch_size: int = 256, exclude_seen: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(ranked item rows [N, k] with -1 for unfilled slots, target rows [N] (-1 unknown), scenario ids [N],
    seconds) of trie-constrained beam search over encoded examples (one dict or an iterable of dicts).
    ``exclude_seen``: the batches carry ``exclude_items`` (Long[N, E] catalog rows, -1 padded; e.g. the user's
    whole history) and the search never returns them (as ``exclude_seen`` of SASRec / popularity)."""
    if not 1 <= k <= beam_width:
        raise ValueError(f"k must be in [1, beam_width={beam_width}], got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = next(model.parameters()).device
    ranked, targets, groups = [], [], []
    t0 = time.perf_counter()
    for batch in iter_batches(frame_encoded_batches, batch_size):
        if "target_item" in batch:
            tgt = batch["target_item"].cpu()
        elif "target_sids" in batch:
            tgt = trie.lookup(batch["target_sids"].cpu().long())
        else:
            raise ValueError("encoded batches need 'target_item' or 'target_sids' to be evaluated")
        inputs = {key: v.to(dev) for key, v in batch.items() if isinstance(v, torch.Tensor) and key != "exclude_items"}
        if exclude_seen and "exclude_items" not in batch:
            raise ValueError("exclude_seen needs 'exclude_items' in the encoded batches")
        extra = {"exclude_items": batch["exclude_items"]} if exclude_seen else {}
        items, _ = constrained_beam_search(model, inputs, trie, beam_width, top_k=k, **extra)
        ranked.append(items.cpu().numpy())
        targets.append(tgt.numpy())
        groups.append(batch["scenario"].cpu().numpy())
    if not ranked:
        raise ValueError("evaluate_generator: no examples")
    return np.concatenate(ranked), np.concatenate(targets), np.concatenate(groups), time.perf_counter() - t0


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
    if trie.num_items != len(sid_table):
        raise ValueError(f"trie has {trie.num_items} items but the SID table has {len(sid_table)}")
    ranked_a, targets_a, group_ids, seconds = generator_ranked(model, frame_encoded_batches, trie, max(ks),
                                                               beam_width, batch_size)
    names = np.asarray(scenario_names, dtype=object)[group_ids] if scenario_names is not None else group_ids
    overall, table = summarize(ranked_a, targets_a, names, ks)
    overall.update(n_unknown_targets=int((targets_a < 0).sum()), seconds=seconds,
                   examples_per_s=len(targets_a) / max(seconds, 1e-9))
    return overall, table


def baseline_ranked(
    train_log: pd.DataFrame,
    test_frame: pd.DataFrame,
    sid_table: SemanticIdTable,
    k: int,
    *,
    sasrec_models: Mapping[str, tuple[object, IdEncoder]] | None = None,
    item_col: str = "item_id",
    scenario_col: str = "scenario",
    batch_size: int = 256,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """({name: ranked SID-table rows [N, k]}, target rows [N] (-1 = not in the catalog), info) of the
    popularity baselines fitted on ``train_log`` and of every ``sasrec_models`` entry (name -> (model, its
    IdEncoder)) on ``test_frame``."""
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
    ranked = {name: pop.recommend(k, scenarios=scen, per_scenario=per) - 1
              for name, per in (("popularity", False), ("popularity_per_scenario", True))}
    if sasrec_models:
        if "long_item_ids" not in test_frame.columns:
            raise ValueError("SASRec evaluation reads test_frame.long_item_ids (oldest first)")
        raw = [np.asarray([] if h is None else h, dtype=object).astype(str) for h in test_frame["long_item_ids"]]
    for name, (model, encoder) in (sasrec_models or {}).items():
        if encoder is None:
            raise ValueError(f"{name} needs the IdEncoder it was trained with")
        codes = [encoder.encode(h, unknown="pad") for h in raw]
        keeps = [c > 0 for c in codes]  # items the model does not know are dropped (with their scenarios)
        hist = [c[keep] for c, keep in zip(codes, keeps)]
        if getattr(model.config, "scenario_aware", False):  # the request's and the history's scenarios enter
            if "long_scenarios" not in test_frame.columns:
                raise ValueError("a scenario-aware SASRec reads test_frame.long_scenarios (one per history item)")
            hist_scen = [np.asarray([] if h is None else h, dtype=object).astype(str)[keep]
                         for h, keep in zip(test_frame["long_scenarios"], keeps)]
            out = model.recommend(hist, k, batch_size=batch_size, scenarios=scen, history_scenarios=hist_scen)
        else:
            out = model.recommend(hist, k, batch_size=batch_size)
        out = out.cpu().numpy()
        # SASRec indices -> raw ids -> table rows, so every model is scored on the same item space
        ranked[name] = catalog.encode(encoder.decode(out.ravel()).astype(str), unknown="pad").reshape(out.shape) - 1
    return ranked, targets, {"n_train_unknown_items": int((~known).sum())}


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
    if sasrec is not None and sasrec_encoder is None:
        raise ValueError("sasrec needs sasrec_encoder (the IdEncoder it was trained with)")
    ranked, targets, info = baseline_ranked(
        train_log, test_frame, sid_table, max(ks), item_col=item_col, scenario_col=scenario_col,
        sasrec_models={"sasrec": (sasrec, sasrec_encoder)} if sasrec is not None else None, batch_size=batch_size)
    scen = test_frame[scenario_col].astype(str).to_numpy()
    out = {name: summarize(r, targets, scen, ks) for name, r in ranked.items()}
    for name in ("popularity", "popularity_per_scenario"):
        out[name][0]["n_train_unknown_items"] = info["n_train_unknown_items"]
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
    sasrec_models: Mapping[str, tuple[object, IdEncoder]] | None = None,
    k: int = max(DEFAULT_KS),
) -> pd.DataFrame:
    """Every model on the same examples (the rows of ``frame``): ``generators`` maps a name to (model, its
    encoded ``frame``); the baselines (popularity, per-scenario popularity, every ``sasrec_models`` entry) are
    fitted on ``train_log``. Returns the cases (:data:`models.eval.cases.CASE_COLUMNS`), ``k`` ranked items per
    model and example."""
    if trie.num_items != len(sid_table):
        raise ValueError(f"trie has {trie.num_items} items but the SID table has {len(sid_table)}")
    ranked, targets, _ = baseline_ranked(train_log, frame, sid_table, k, sasrec_models=sasrec_models)
    for name, (model, encoded) in generators.items():
        ranked[name], gen_targets, _, _ = generator_ranked(model, encoded, trie, k, beam_width)
        if not np.array_equal(gen_targets, targets):
            raise ValueError(f"{name}: its encoded examples do not hold the frame's targets in the frame's order")
    users = frame["user_id"].astype(str).to_numpy()
    scen = frame["scenario"].astype(str).to_numpy()
    known = np.where(targets >= 0, targets, -2)  # an item outside the catalog is never a hit
    parts = [pd.DataFrame({"model": name, "example": np.arange(len(frame)), "user_id": users, "scenario": scen,
                           "rank": target_ranks(r, known)}) for name, r in ranked.items()]
    return pd.concat(parts, ignore_index=True)


def evaluate_splits(
    generators: Mapping[str, tuple[object, object]],
    examples: pd.DataFrame,
    interaction_log: pd.DataFrame,
    trie: SIDTrie,
    sid_table: SemanticIdTable,
    *,
    sasrec_models: Mapping[str, tuple[object, IdEncoder]] | None = None,
    beam_width: int = 20,
    splits: Sequence[str] = ("valid", "test"),
    k: int = max(DEFAULT_KS),
) -> pd.DataFrame:
    """The cases of every model on every example of ``splits`` (column ``split`` first). ``generators``: name ->
    (model, its ExampleEncoder). Baselines are fitted before the targets: on validation they see the train
    events only, on test also the validation events (the test history, as for every model)."""
    held_out = examples[examples["split"].isin(["valid", "test"])]
    parts = []
    for split in splits:
        frame = examples[examples["split"] == split].reset_index(drop=True)
        if frame.empty:
            raise ValueError(f"the examples have no {split!r} rows")
        train_log = log_without(interaction_log, held_out if split == "valid" else frame)
        encoded = {name: (model, encoder.encode(frame)) for name, (model, encoder) in generators.items()}
        cases = compare_models(encoded, frame, train_log, trie, sid_table, beam_width=beam_width,
                               sasrec_models=sasrec_models, k=k)
        parts.append(cases.assign(split=split))
    out = pd.concat(parts, ignore_index=True)
    return out[["split", *[c for c in out.columns if c != "split"]]]
