"""The unified reward model fitted on the pipeline's training examples (what the ``reward_model`` asset runs).

Rows. Up to ``max_examples`` train-split examples (a seeded sample, :func:`models.rl.experiment.split_rows`)
become (user context, scenario, item, action labels) rows with ``num_negatives`` sampled negatives each
(:func:`models.rl.generator_policy.reward_data_from_examples`). 90 % of them fit the model, the other 10 %
calibrate it; the validation examples only score it. Nothing is fitted on validation or test events.

Report. Per head (click, cart, order): AUC, log-loss before and after calibration, the log-loss of the constant
predictor (the train rows' base rate), the mean predicted probability and the observed rate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.artifacts import atomic_write
from models.configs import from_section
from models.features.example_encoder import ExampleEncoder
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie

from .experiment import split_rows
from .generator_policy import reward_data_from_examples
from .reward_model import (
    ACTIONS,
    RewardModel,
    RewardModelConfig,
    calibrate,
    evaluate,
    log_loss,
    save_reward_model,
    train_reward_model,
)

__all__ = ["RewardFit", "fit_reward_from_examples", "item_feature_matrix"]

CALIBRATION_SHARE = 0.1


@dataclass
class RewardFit:
    model: RewardModel
    config: RewardModelConfig
    history: list[dict]
    scenarios: tuple[str, ...]
    metrics: dict[str, float]  # calibrated, on the validation rows
    calibration: dict
    heads: pd.DataFrame  # the per-head report of the module docstring
    n_train_rows: int
    n_held_out_rows: int
    seconds: float

    def save(self, out_dir: str | Path, item_x: torch.Tensor, codebook_version: str) -> dict:
        """Write the model and the item features it scores (atomically) into ``out_dir``; returns the record the
        ``reward_model`` asset hands to RL (paths, scenarios, config, metrics, calibration, history)."""
        out_dir = Path(out_dir)
        checkpoint = save_reward_model(self.model, out_dir / "reward_model.pt")
        features = atomic_write(out_dir / "item_features.npy",  # the temporary name keeps the .npy suffix
                                lambda tmp: np.save(tmp, item_x.numpy(), allow_pickle=False))
        return {"checkpoint": str(checkpoint), "item_features": str(features), "scenarios": list(self.scenarios),
                "codebook_version": codebook_version, "config": asdict(self.config), "metrics": self.metrics,
                "calibration": self.calibration, "history": self.history}

    def summary(self) -> dict:
        return {"train_rows": self.n_train_rows, "held_out_rows": self.n_held_out_rows,
                "auc_click": self.metrics["auc_click"], "auc_order": self.metrics["auc_order"],
                "seconds": round(self.seconds, 1)}


def item_feature_matrix(item_ids: Sequence[str], fused: np.ndarray, sid_table: SemanticIdTable) -> torch.Tensor:
    """The catalog embeddings ``fused`` (rows = ``item_ids``) in SID-table row order (= trie leaf order)."""
    index = pd.Index(np.asarray(item_ids).astype(str))
    pos = index.get_indexer(sid_table.item_ids.astype(str))
    if (pos < 0).any():
        missing = sid_table.item_ids[pos < 0][:5].tolist()
        raise ValueError(f"{int((pos < 0).sum())} items of the SID table have no catalog embedding, e.g. {missing}")
    return torch.from_numpy(np.ascontiguousarray(fused[pos], dtype=np.float32))


def fit_reward_from_examples(training_examples: pd.DataFrame, sid_table: SemanticIdTable, item_x: torch.Tensor,
                             scenarios: Sequence[str], *, max_examples: int, num_negatives: int, seed: int,
                             model_settings: Mapping) -> RewardFit:
    """Fit, calibrate and score the reward model (module docstring). ``model_settings``: the RewardModelConfig
    fields the configuration sets, by name (hidden_dim, lr, ...; other entries are ignored)."""
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    train = split_rows(training_examples, "train", max_examples, seed)
    valid = split_rows(training_examples, "valid", len(training_examples), seed)
    encoder = ExampleEncoder.fit(train, sid_table, scenarios)  # reads scenario, instruction and short history
    n_scen = len(encoder.scenarios)
    train_rows = reward_data_from_examples(encoder.encode(train), train["action"], item_x, trie, n_scen,
                                           num_negatives, seed)
    fit_rows, calibration_rows = train_rows.split((1 - CALIBRATION_SHARE, CALIBRATION_SHARE), seed=seed)
    eval_rows = reward_data_from_examples(encoder.encode(valid), valid["action"], item_x, trie, n_scen,
                                          num_negatives, seed + 1)
    config = from_section(RewardModelConfig, model_settings, user_dim=fit_rows.user_x.shape[1],
                          item_dim=item_x.shape[1], num_scenarios=n_scen, seed=seed)
    start = time.perf_counter()
    model, history = train_reward_model(fit_rows, config)
    uncalibrated = evaluate(model, eval_rows)
    fitted = calibrate(model, calibration_rows)
    metrics = evaluate(model, eval_rows)
    seconds = time.perf_counter() - start

    base_rate = fit_rows.labels.mean(0)  # the constant predictor
    with torch.no_grad():
        probs = model.predict_proba(eval_rows.user_x, eval_rows.scenario, eval_rows.item_x)
    rows = []
    for k, action in enumerate(ACTIONS):
        y = eval_rows.labels[:, k]
        rows.append({
            "head": action, "auc": metrics[f"auc_{action}"], "auc_constant": 0.5,
            "logloss": metrics[f"logloss_{action}"], "logloss_uncalibrated": uncalibrated[f"logloss_{action}"],
            "logloss_constant": log_loss(torch.full_like(y, float(base_rate[k])), y),
            "mean_predicted": float(probs[:, k].mean()), "observed_rate": float(y.mean()),
        })
    return RewardFit(model=model, config=config, history=history, scenarios=tuple(encoder.scenarios),
                     metrics={k: float(v) for k, v in metrics.items()}, calibration=fitted,
                     heads=pd.DataFrame(rows), n_train_rows=len(fit_rows), n_held_out_rows=len(eval_rows),
                     seconds=seconds)
