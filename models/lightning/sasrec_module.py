"""Lightning training of SASRec with early stopping on validation NDCG@10, and test evaluation.

One step serves train and validation: ``loss = model.loss(inputs, targets)`` (next-item cross-entropy over
non-padding targets; in validation only the last position has a target). Validation additionally ranks the
full catalog from the last position and logs HR@10 / NDCG@10 with seen items kept (``val/hr@10``,
``val/ndcg@10``) and excluded (``val/hr@10_excl_seen``, ``val/ndcg@10_excl_seen``), averaged over users.

:func:`train_sasrec` fits with early stopping on ``monitor`` (default ``val/ndcg@10``, patience
``config.patience`` epochs), restores the best checkpoint (``torch.load(weights_only=True)``) and evaluates
on the test cases with :func:`models.eval.metrics.ranking_metrics`, both with seen items kept and excluded.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from models.eval.metrics import DEFAULT_KS, per_case_metrics, ranking_metrics, top_k
from models.eval.split import EvalCases, IdEncoder, LeaveLastOutSplit
from models.lightning.sequence_data import SequenceDataModule
from models.lightning.train import read_checkpoint
from models.nn.sasrec import SASRec, SASRecConfig

__all__ = ["SASRecModule", "evaluate_sasrec", "load_sasrec", "save_sasrec", "train_sasrec"]

SAVED_FORMAT = "oxyrec-sasrec-v1"


class SASRecModule(L.LightningModule):
    def __init__(self, n_items: int, **config: Any) -> None:
        super().__init__()
        # hparams are plain values (no dataclass) so checkpoints load with weights_only=True
        self.save_hyperparameters()
        if "adam_betas" in config:
            config["adam_betas"] = tuple(config["adam_betas"])
        self.config = SASRecConfig(**config)
        self.model = SASRec(n_items, self.config)

    @classmethod
    def from_config(cls, n_items: int, config: SASRecConfig) -> SASRecModule:
        return cls(n_items, **asdict(config))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, targets = batch["inputs"], batch["targets"]
        hidden = self.model(inputs)
        loss = self.model.loss_from_hidden(hidden, targets)
        B = inputs.shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=B, prog_bar=stage == "val")
        if stage != "train":
            last, target = self.model.item_logits(hidden[:, -1]).detach(), targets[:, -1]
            for suffix, exclude in (("", None), ("_excl_seen", batch["seen"])):
                ranked = top_k(last, 10, exclude=exclude)
                m = per_case_metrics(ranked, target, ks=(10,))
                for name, values in m.items():
                    self.log(f"{stage}/{name}{suffix}", float(values.mean()), on_epoch=True, batch_size=B)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.Adam(self.parameters(), lr=c.lr, betas=c.adam_betas, weight_decay=c.weight_decay)


def evaluate_sasrec(
    model: SASRec,
    cases: EvalCases,
    *,
    exclude_seen: bool,
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 256,
) -> dict[str, float]:
    """HR@k / NDCG@k of ``model`` on encoded ``cases``, ranking the full catalog."""
    ranked = model.recommend(cases.histories, max(ks), exclude_seen=exclude_seen, batch_size=batch_size)
    return ranking_metrics(ranked, np.asarray(cases.targets), ks)


def train_sasrec(
    split: LeaveLastOutSplit,
    config: SASRecConfig = SASRecConfig(),
    *,
    max_epochs: int | None = None,
    accelerator: str = "cpu",
    devices: int = 1,
    default_root_dir: str | Path,
    encoder: IdEncoder | None = None,
    monitor: str = "val/ndcg@10",
    enable_progress_bar: bool = False,
    ks: tuple[int, ...] = DEFAULT_KS,
) -> tuple[SASRec, dict[str, Any]]:
    """Train SASRec on ``split`` with Lightning; return the best model (by ``monitor``) and its metrics.

    Item indices follow ``encoder`` (default ``encode_ids(split.items)``). The metrics dict has
    ``test/hr@k``, ``test/ndcg@k`` (seen kept), ``test_excl_seen/...`` (seen excluded), the best validation
    score, ``best_epoch`` (0-based), ``epochs`` run, ``train_seconds`` and ``n_params``.
    """
    if max_epochs is None:
        max_epochs = config.max_epochs
    root = Path(default_root_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = SequenceDataModule(
        split,
        max_len=config.max_len,
        batch_size=config.batch_size,
        seed=config.seed,
        window_stride=config.window_stride,
        encoder=encoder,
    )
    data.setup()
    module = SASRecModule.from_config(data.n_items, config)
    ckpt = ModelCheckpoint(dirpath=root / "checkpoints", filename="best", monitor=monitor, mode="max", save_top_k=1)
    stop = EarlyStopping(monitor=monitor, mode="max", patience=config.patience)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        default_root_dir=root,
        logger=CSVLogger(root, name="sasrec"),
        callbacks=[ckpt, stop],
        deterministic=True,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # metrics are logged per epoch; this only silences the "few batches" warning
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    train_seconds = time.perf_counter() - t0

    if ckpt.best_model_score is None or not ckpt.best_model_path:
        raise RuntimeError(f"no checkpoint was saved: was {monitor!r} logged during validation?")
    state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    model = module.model.cpu().eval()

    metrics: dict[str, Any] = {
        f"best_{monitor}": float(ckpt.best_model_score),
        "best_epoch": int(state["epoch"]),
        "epochs": int(trainer.current_epoch),
        "train_seconds": train_seconds,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_items": data.n_items,
    }
    for stage in ("valid", "test"):
        cases = data.encoded_cases(stage)
        for prefix, excl in ((stage, False), (f"{stage}_excl_seen", True)):
            for name, value in evaluate_sasrec(model, cases, exclude_seen=excl, ks=ks).items():
                metrics[f"{prefix}/{name}"] = value
    return model, metrics


def save_sasrec(model: SASRec, encoder: IdEncoder, path: str | Path) -> Path:
    """One self-contained weights file {format, config, item_ids, state_dict}: the item ids travel with the
    weights, so the model can never be paired with the wrong id mapping. Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": SAVED_FORMAT,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()},
        "item_ids": [str(i) for i in encoder.ids],
        "state_dict": model.state_dict(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_sasrec(path: str | Path) -> tuple[SASRec, IdEncoder]:
    """(model in eval mode, its IdEncoder) from a :func:`save_sasrec` file, loaded with ``weights_only=True``;
    ValueError naming the file when it is missing, corrupt or not a SASRec file."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != SAVED_FORMAT:
        raise ValueError(f"{path} is not a SASRec weights file (format {ckpt.get('format')!r}, expected {SAVED_FORMAT!r})")
    try:
        raw = dict(ckpt["config"])
        raw["adam_betas"] = tuple(raw["adam_betas"])
        config = SASRecConfig(**raw)
        encoder = IdEncoder(ids=np.asarray(ckpt["item_ids"], dtype=object), offset=1)
        model = SASRec(encoder.n_ids, config)
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} does not hold a loadable SASRec: {type(e).__name__}: {str(e)[:300]}") from e
    return model.eval(), encoder
