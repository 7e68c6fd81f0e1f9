"""Progress of a Lightning fit as one line per epoch, sent to any ``log(str)`` callable (a Dagster logger, print).

Long CPU fits (SFT, SASRec) otherwise go silent for minutes; with this callback each epoch prints e.g.

    sft epoch 3/10 (step 960, 41.2 s): train_loss 5.213, val_hr10 0.2310, val_ndcg10 0.1287

The line lists the epoch's numeric ``trainer.callback_metrics`` (step-level entries left out), so it shows what
the module logs without knowing its metric names. Only the global-zero process logs (DDP runs log once).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["EpochProgress"]


class EpochProgress(Callback):
    def __init__(self, log: Callable[[str], None], name: str = "fit") -> None:
        self.emit, self.name = log, name
        self._start = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = []
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.endswith("_step"):
                continue
            try:
                metrics.append(f"{key.removesuffix('_epoch')} {float(value):.4g}")
            except (TypeError, ValueError):
                continue
        seconds = time.perf_counter() - self._start
        self.emit(f"{self.name} epoch {trainer.current_epoch + 1}/{trainer.max_epochs} (step {trainer.global_step}, "
                 f"{seconds:.1f} s): " + ", ".join(metrics))
