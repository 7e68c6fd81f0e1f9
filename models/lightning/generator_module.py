"""LightningModule for supervised fine-tuning (SFT) of the OxygenREC generator.

One step serves train and validation (``_shared_step``): ``out = model(batch)`` (models/nn/generator.py)

    loss = ce + q2i_weight * q2i + moe_aux_weight * aux

logged per epoch as ``{stage}_loss``, ``{stage}_ce``, ``{stage}_q2i``, ``{stage}_aux`` (stage = train / val;
``train_loss_step`` on the progress bar). Validation also ranks the **full catalog** with trie-constrained beam
search (``constrained_beam_search``, beam ``beam_width``, top ``max(ks)``) and logs, with r_b the 0-based rank
of the target item in user b's list (models/eval/metrics.py),

    val_hr{k}   = mean_b 1[r_b < k]                  k in ks (default 1, 5, 10)
    val_ndcg{k} = mean_b 1[r_b < k] / log2(r_b + 2)  k in ks, k > 1

Each batch logs its mean with ``batch_size=B``; Lightning's epoch-end reduction is the B-weighted mean, i.e.
the exact mean over all validation examples (``sync_dist`` averages over DDP ranks). Early stopping and the
best checkpoint monitor ``val_hr10``. The trie is a constructor argument, not a hyperparameter; without it
only the losses are logged.

Optimizer: AdamW, weight decay on matrices only (``p.dim() >= 2``: linear weights and embeddings; no decay
on biases, LayerNorm gains, the BOS vector or the default instruction). Learning rate per optimizer step s:

    lr(s) = lr * (s + 1) / warmup                                       s < warmup
    lr(s) = lr * (m + (1 - m) * (1 + cos(pi * p)) / 2),  p = min(1, (s - warmup) / (T - warmup))   otherwise

with m = ``min_lr_ratio`` and T = ``total_steps`` or ``trainer.estimated_stepping_batches``.

Hyperparameters are plain values (the generator config as a dict, lists instead of tuples), so Lightning's
checkpoints load with ``torch.load(weights_only=True)``; the schedule lambda is a ``functools.partial``, whose
(empty) ``__dict__`` is all LambdaLR stores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning as L
import torch

from models.decoding.beam_search import constrained_beam_search
from models.eval.metrics import per_case_metrics
from models.nn.config import GeneratorConfig
from models.nn.generator import OxygenGenerator
from models.semantic_ids.trie import SIDTrie

__all__ = ["GeneratorModule", "warmup_cosine"]

LOSS_KEYS = {"loss": "loss", "ce": "ce_loss", "q2i": "q2i_loss", "aux": "aux_loss"}


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier of the module docstring (linear warmup, then cosine decay to ``min_ratio``)."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def metric_names(ks: Sequence[int]) -> list[str]:
    """Logged validation ranking metrics, e.g. ['val_hr1', 'val_hr5', 'val_ndcg5', ...]."""
    return [f"val_hr{k}" for k in ks] + [f"val_ndcg{k}" for k in ks if k > 1]


class GeneratorModule(L.LightningModule):
    def __init__(
        self,
        generator_config: dict,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.98),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        total_steps: int | None = None,
        beam_width: int = 20,
        ks: Sequence[int] = (1, 5, 10),
        trie: SIDTrie | None = None,
    ) -> None:
        super().__init__()
        if isinstance(generator_config, GeneratorConfig):
            generator_config = generator_config.to_dict()
        generator_config = dict(generator_config)
        generator_config["vocab_sizes"] = [int(v) for v in generator_config.get("vocab_sizes", ())]
        betas = [float(b) for b in betas]
        ks = sorted({int(k) for k in ks})
        if lr <= 0 or weight_decay < 0 or warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, warmup_steps >= 0, min_lr_ratio in [0, 1]; got "
                             f"{lr}, {weight_decay}, {warmup_steps}, {min_lr_ratio}")
        if not ks or ks[0] < 1 or ks[-1] > beam_width:
            raise ValueError(f"ks must be positive and <= beam_width={beam_width}, got {ks}")
        # plain values only (weights_only checkpoints); the trie is data, passed in, never saved
        self.save_hyperparameters(ignore=["trie"])
        self.cfg = GeneratorConfig.from_dict(generator_config)
        self.model = OxygenGenerator(self.cfg)
        self.trie = trie
        if trie is not None and tuple(trie.vocab_sizes) != tuple(self.cfg.vocab_sizes):
            raise ValueError(f"trie vocab_sizes {trie.vocab_sizes} != generator vocab_sizes {self.cfg.vocab_sizes}")

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict) -> dict:
        return self.model(batch)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        out = self.model(batch)
        # examples in the batch (sequence batches: their training targets), the weight of the epoch means
        b = int(out["n_targets"]) if "n_targets" in out else int(batch["scenario"].shape[0])
        metrics = {f"{stage}_{name}": out[key].detach() for name, key in LOSS_KEYS.items()}
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=b, sync_dist=stage != "train")
        if stage == "train":
            self.log("train_loss_step", out["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=b)
        return out["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "val")
        if self.trie is not None:
            self._log_ranking(batch)
        return loss

    @torch.no_grad()
    def _log_ranking(self, batch: dict) -> None:
        assert self.trie is not None
        hp = self.hparams
        ks = list(hp.ks)
        items, _ = constrained_beam_search(self.model, batch, self.trie, hp.beam_width, top_k=max(ks))
        if "target_item" in batch:
            targets = batch["target_item"]
        else:
            targets = self.trie.lookup(batch["target_sids"].cpu())
        targets = torch.where(targets >= 0, targets, -2)  # unknown target: never a hit (unfilled slots are -1)
        cases = per_case_metrics(items.cpu(), targets.cpu(), ks)
        b = int(targets.shape[0])
        for k in ks:
            names = [(f"val_hr{k}", cases[f"hr@{k}"])] + ([(f"val_ndcg{k}", cases[f"ndcg@{k}"])] if k > 1 else [])
            for name, values in names:
                self.log(name, float(values.mean()), on_step=False, on_epoch=True, batch_size=b, sync_dist=True,
                         prog_bar=name == f"val_hr{ks[-1]}")

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, betas=tuple(hp.betas),
        )
        total = hp.total_steps if hp.total_steps is not None else int(self.trainer.estimated_stepping_batches)
        fn = partial(warmup_cosine, warmup=max(1, int(hp.warmup_steps)), total=max(1, int(total)),
                     min_ratio=float(hp.min_lr_ratio))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
