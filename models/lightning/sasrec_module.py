"""Lightning training of SASRec (plain or scenario-aware) with early stopping on validation NDCG@10.

One step serves train and validation: ``loss = cross-entropy(model(inputs[, scenarios]), targets)`` over the
positions with a target (in validation only the last position has one). Validation additionally ranks the
full catalog from the last position and logs HR@10 / NDCG@10 with seen items kept (``val/hr@10``,
``val/ndcg@10``) and excluded (``val/hr@10_excl_seen``, ``val/ndcg@10_excl_seen``), averaged over users.

:func:`train_sasrec` fits with early stopping on ``monitor`` (default ``val/ndcg@10``, patience
``config.patience`` epochs, at most ``config.max_epochs``), restores the best checkpoint
(``torch.load(weights_only=True)``) and evaluates on the validation and test cases with
:func:`models.eval.metrics.ranking_metrics`, with seen items kept and excluded. Every epoch's train loss and
validation metrics go to ``metrics["curve"]`` and, one line per epoch, to the optional ``log`` callable.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from models.artifacts import atomic_write
from models.eval.metrics import DEFAULT_KS, per_case_metrics, ranking_metrics, top_k
from models.eval.split import EvalCases, IdEncoder, LeaveLastOutSplit, encode_ids
from models.lightning.sequence_data import SequenceDataModule
from models.lightning.train import MetricsHistory, read_checkpoint
from models.nn.sasrec import SASRec, SASRecConfig, cut_left_padding

__all__ = ["SASRecModule", "evaluate_sasrec", "load_sasrec", "save_sasrec", "train_sasrec"]

SAVED_FORMAT = "oxyrec-sasrec-v1"


def _config_from_dict(raw: dict) -> SASRecConfig:
    raw = dict(raw)
    if "adam_betas" in raw:
        raw["adam_betas"] = tuple(raw["adam_betas"])
    return SASRecConfig(**raw)


def _config_to_dict(config: SASRecConfig) -> dict:
    """Plain values only (lists, no tuples), so checkpoints load with ``weights_only=True``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


class SASRecModule(L.LightningModule):
    def __init__(self, n_items: int, scenarios: Sequence[str] = (), **config: Any) -> None:
        super().__init__()
        # hparams are plain values (no dataclass, no tuples) so checkpoints load with weights_only=True
        self.save_hyperparameters({"n_items": n_items, "scenarios": [str(s) for s in scenarios], **config})
        self.config = _config_from_dict(config)
        self.model = SASRec(n_items, self.config, scenarios=scenarios)

    @classmethod
    def from_config(cls, n_items: int, config: SASRecConfig, scenarios: Sequence[str] = ()) -> SASRecModule:
        return cls(n_items, scenarios, **_config_to_dict(config))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, targets, scenarios = cut_left_padding(batch["inputs"], batch["targets"], batch.get("scenarios"))
        hidden = self.model(inputs, scenarios)
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


class EpochLog(MetricsHistory):
    """Per-epoch rows (epoch, train/val metrics, seconds since the fit started) and one ``log`` line each."""

    def __init__(self, log: Callable[[str], None] | None = None, monitor: str = "val/ndcg@10") -> None:
        super().__init__()
        self.log_fn = log
        self.monitor = monitor
        self._t0 = time.perf_counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.rows or trainer.sanity_checking:
            return
        row = self.rows[-1]
        row["seconds"] = time.perf_counter() - self._t0
        if self.log_fn is not None:
            scores = [r[self.monitor] for r in self.rows if self.monitor in r]
            best = int(np.argmax(scores)) if scores else -1
            self.log_fn(
                f"sasrec epoch {row['epoch']}: train loss {row.get('train/loss', float('nan')):.4f}, "
                f"val HR@10 {row.get('val/hr@10', float('nan')):.4f} NDCG@10 {row.get('val/ndcg@10', float('nan')):.4f}"
                f" (best {self.monitor} {max(scores) if scores else float('nan'):.4f} at epoch "
                f"{self.rows[best]['epoch'] if scores else '-'}), {row['seconds']:.0f} s"
            )


def evaluate_sasrec(
    model: SASRec,
    cases: EvalCases,
    *,
    exclude_seen: bool,
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 256,
) -> dict[str, float]:
    """HR@k / NDCG@k of ``model`` on encoded ``cases`` (items encoded; scenarios as names), full catalog."""
    extra = {}
    if model.config.scenario_aware:
        extra = {"scenarios": cases.scenarios, "history_scenarios": cases.history_scenarios}
    ranked = model.recommend(cases.histories, max(ks), exclude_seen=exclude_seen, batch_size=batch_size, **extra)
    return ranking_metrics(ranked, np.asarray(cases.targets), ks)


def split_scenarios(split: LeaveLastOutSplit) -> IdEncoder:
    """Encoder over the scenario names of the split (train, valid and test); ValueError without a scenario column."""
    col = split.scenario_col
    if col is None or split.scenario_sequences is None:
        raise ValueError("a scenario-aware SASRec needs a split with a scenario column")
    frames = [f[col] for f in (split.train, split.valid, split.test) if len(f)]
    return encode_ids(np.concatenate([f.astype(str).to_numpy() for f in frames]))


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
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[SASRec, dict[str, Any]]:
    """Train SASRec on ``split`` with Lightning; return the best model (by ``monitor``) and its metrics.

    Item indices follow ``encoder`` (default ``encode_ids(split.items)``); a scenario-aware config takes its
    scenario vocabulary from the split. The metrics dict has ``valid/...`` and ``test/hr@k``, ``test/ndcg@k``
    (seen kept), ``valid_excl_seen/...``, ``test_excl_seen/...`` (seen excluded), the best validation score,
    ``best_epoch`` (0-based), ``epochs`` (run), ``stopped_early`` (patience ended it before ``max_epochs``),
    ``train_seconds``, ``seconds_per_epoch``, ``n_params``, ``n_items`` and ``curve`` (one dict per epoch:
    ``epoch``, ``train/loss``, ``val/loss``, ``val/hr@10``, ``val/ndcg@10``, ..., ``seconds``).
    ``log`` (e.g. ``print`` or a Dagster logger's ``info``) gets one line per epoch.
    """
    if max_epochs is None:
        max_epochs = config.max_epochs
    root = Path(default_root_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    scenario_encoder = split_scenarios(split) if config.scenario_aware else None
    data = SequenceDataModule(
        split,
        max_len=config.max_len,
        batch_size=config.batch_size,
        seed=config.seed,
        window_stride=config.window_stride,
        encoder=encoder,
        scenario_encoder=scenario_encoder,
    )
    data.setup()
    scenarios = [str(s) for s in scenario_encoder.ids] if scenario_encoder is not None else []
    module = SASRecModule.from_config(data.n_items, config, scenarios)
    ckpt = ModelCheckpoint(dirpath=root / "checkpoints", filename="best", monitor=monitor, mode="max", save_top_k=1)
    stop = EarlyStopping(monitor=monitor, mode="max", patience=config.patience)
    history = EpochLog(log, monitor)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    warn_only_before = torch.is_deterministic_algorithms_warn_only_enabled()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        default_root_dir=root,
        logger=CSVLogger(root, name="sasrec"),
        callbacks=[ckpt, stop, history, *callbacks],
        deterministic=True,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # metrics are logged per epoch; this only silences the "few batches" warning
    )
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data)
    finally:
        # Trainer(deterministic=True) switches torch to deterministic algorithms process-wide: undo it
        torch.use_deterministic_algorithms(deterministic_before, warn_only=warn_only_before)
    train_seconds = time.perf_counter() - t0

    if ckpt.best_model_score is None or not ckpt.best_model_path:
        raise RuntimeError(f"no checkpoint was saved: was {monitor!r} logged during validation?")
    state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    model = module.model.cpu().eval()

    epochs = int(trainer.current_epoch)
    metrics: dict[str, Any] = {
        f"best_{monitor}": float(ckpt.best_model_score),
        "best_epoch": int(state["epoch"]),
        "epochs": epochs,
        "stopped_early": bool(stop.stopped_epoch > 0),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(epochs, 1),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_items": data.n_items,
        "n_train_windows": len(data._datasets["train"]),
    }
    for stage in ("valid", "test"):
        cases = data.encoded_cases(stage)
        for prefix, excl in ((stage, False), (f"{stage}_excl_seen", True)):
            for name, value in evaluate_sasrec(model, cases, exclude_seen=excl, ks=ks).items():
                metrics[f"{prefix}/{name}"] = value
    metrics["curve"] = [dict(r) for r in history.rows]
    return model, metrics


def train_variants(split: LeaveLastOutSplit, configs: Mapping[str, SASRecConfig], out_dir: str | Path, *,
                   accelerator: str = "cpu", devices: int = 1,
                   log: Callable[[str], None] | None = None) -> tuple[dict[str, dict], pd.DataFrame, dict[str, list]]:
    """Train every named SASRec variant on ``split`` (same item encoder), each from scratch in ``out_dir/<name>``,
    and save its weights as ``out_dir/<name>.pt``. Returns ({name: {"weights", "metrics" (the numbers)}}, one
    summary row per variant (epochs, best epoch, train seconds, valid / test HR@10 and NDCG@10), {name: learning
    curve})."""
    out_dir = Path(out_dir)
    encoder = encode_ids(split.items)
    variants, rows, curves = {}, [], {}
    for name, config in configs.items():
        shutil.rmtree(out_dir / name, ignore_errors=True)  # a fresh fit each time: no stale best.ckpt to pick up
        model, metrics = train_sasrec(split, config, encoder=encoder, default_root_dir=out_dir / name,
                                      accelerator=accelerator, devices=devices, log=log)
        weights = save_sasrec(model, encoder, out_dir / f"{name}.pt")
        variants[name] = {"weights": str(weights),
                          "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
        curves[name] = metrics["curve"]
        rows.append({"variant": name, "epochs": int(metrics["epochs"]), "best_epoch": int(metrics["best_epoch"]),
                     "train_seconds": round(float(metrics["train_seconds"]), 1),
                     **{k: round(float(metrics[k]), 4) for k in ("valid/hr@10", "valid/ndcg@10", "test/hr@10",
                                                                  "test/ndcg@10")}})
    return variants, pd.DataFrame(rows), curves


def save_sasrec(model: SASRec, encoder: IdEncoder, path: str | Path) -> Path:
    """One self-contained weights file {format, config, item_ids, scenarios, state_dict}: the item ids and the
    scenario names travel with the weights, so the model can never be paired with the wrong mapping.
    Written atomically."""
    if encoder.n_ids != model.n_items:
        raise ValueError(f"the encoder has {encoder.n_ids} items, the model {model.n_items}")
    payload = {
        "format": SAVED_FORMAT,
        "config": _config_to_dict(model.config),
        "item_ids": [str(i) for i in encoder.ids],
        "scenarios": list(model.scenarios),
        "state_dict": model.state_dict(),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_sasrec(path: str | Path) -> tuple[SASRec, IdEncoder]:
    """(model in eval mode, its item IdEncoder) from a :func:`save_sasrec` file, loaded with
    ``weights_only=True``; a scenario-aware model has its scenario names in ``model.scenarios``.
    ValueError naming the file when it is missing, corrupt or not a SASRec file."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != SAVED_FORMAT:
        raise ValueError(f"{path} is not a SASRec weights file (format {ckpt.get('format')!r}, expected {SAVED_FORMAT!r})")
    try:
        config = _config_from_dict(ckpt["config"])
        encoder = IdEncoder(ids=np.asarray(ckpt["item_ids"], dtype=object), offset=1)
        model = SASRec(encoder.n_ids, config, scenarios=ckpt.get("scenarios", []))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} does not hold a loadable SASRec: {type(e).__name__}: {str(e)[:300]}") from e
    return model.eval(), encoder
