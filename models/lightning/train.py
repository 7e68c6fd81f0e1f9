"""Supervised fine-tuning (SFT) of the generator with Lightning, and checkpoint loading.

:func:`train_generator` wires :class:`~models.lightning.generator_data.GeneratorDataModule` and
:class:`~models.lightning.generator_module.GeneratorModule` into a Trainer:

* ``seed_everything(seed, workers=True)``; ``deterministic`` from the config; epoch order seeded by (seed, epoch);
* ``ModelCheckpoint`` in ``out_dir``: ``best.ckpt`` (max ``val_hr10``) and ``last.ckpt`` (every save);
* ``EarlyStopping`` on ``val_hr10`` (mode max; ``patience`` counts validation runs, i.e. epochs when
  ``val_every_n_epochs=1``);
* ``CSVLogger`` in ``out_dir/logs`` (+ ``TensorBoardLogger`` when ``tensorboard`` or ``tensorboardX`` is
  installed; in this venv neither is, so CSV only), ``LearningRateMonitor``;
* accelerator / devices / strategy / precision from :class:`SFTConfig`, so the same call runs DDP on GPUs
  (e.g. ``SFTConfig(accelerator="gpu", devices=4, strategy="ddp", precision="bf16-mixed")``).

**Resume.** If ``out_dir/last.ckpt`` exists (and ``resume=True``), training continues from it: weights,
optimizer, LR schedule, epoch/step counters, callback states (best score, early-stopping patience) and the
metrics history are restored, and the encoder is read from ``out_dir/encoder.json`` (so token ids match the
checkpoint) instead of being refitted. A finished run resumed with the same ``max_epochs`` stops at once; raise
``max_epochs`` to train longer. The checkpoint's generator config must equal the resolved one, else ValueError.
Use a fresh ``out_dir`` (or ``resume=False``, which deletes nothing but ignores last.ckpt) for a new run. Do not
move ``out_dir`` between runs: Lightning then forgets the best score (its checkpoint paths are absolute).

**Config resolution.** Data-determined fields of ``generator_config`` are replaced by the encoder's
(``ExampleEncoder.generator_config``): vocab_sizes (the SID table's), n_scenarios, profile_vocab_size,
n_profile_fields; max_short / max_long / instruction_dim of the config drive the encoder.

**Loading.** :func:`load_generator` reads a Lightning checkpoint (``hyper_parameters.generator_config`` +
``state_dict`` with the ``model.`` prefix) or a file of :func:`save_generator`, always with
``torch.load(weights_only=True)``; an unreadable file, a missing key or a parameter mismatch raises ValueError
naming the file and what mismatched.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from models.artifacts import atomic_write
from models.lightning.generator_data import EncoderConfig, ExampleEncoder, GeneratorDataModule, split_frames
from models.lightning.generator_module import GeneratorModule
from models.nn.config import GeneratorConfig
from models.nn.generator import OxygenGenerator
from models.semantic_ids.codebook import SemanticIdTable
from models.semantic_ids.trie import SIDTrie

__all__ = ["MONITOR", "SFTConfig", "SFTResult", "load_generator", "read_checkpoint", "save_generator",
           "train_generator"]

MONITOR = "val_hr10"
SAVED_FORMAT = "oxyrec.generator"


@dataclass(frozen=True)
class SFTConfig:
    max_epochs: int = 10
    batch_size: int = 256
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    gradient_clip_val: float | None = 1.0
    patience: int = 3
    seed: int = 0
    beam_width: int = 20
    ks: tuple[int, ...] = (1, 5, 10)
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = True
    enable_progress_bar: bool = True
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    val_every_n_epochs: int = 1
    num_workers: int = 0
    resume: bool = True  # continue from out_dir/last.ckpt when it exists
    # "last": one training target per example row (the example's own features). "all": every position of the
    # users' sequences in one pass (needs GeneratorConfig.history_encoder="causal"): a batch is batch_size windows
    # of max_long + 1 items (models/lightning/generator_data.sequence_windows), so an epoch still trains each
    # train example once, with a causal encoder pass per window instead of per example.
    # training budget: max_epochs passes over the train examples (limit_train_batches caps the batches of a pass),
    # optionally max_steps optimizer steps (None = no cap); both are deterministic from config + seed. The
    # wall-clock cap is only reported (SFTResult.over_wall_clock_cap and a warning), never used to stop training,
    # so the same config always trains the same model whatever the machine's load.
    max_steps: int | None = None
    wall_clock_cap_s: float | None = None
    train_positions: str = "last"
    window_stride: int | None = None  # "all": targets per window after a user's first one (None: (max_long + 1) // 2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        for name in ("max_epochs", "batch_size", "eval_batch_size", "patience", "beam_width", "val_every_n_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SFTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.num_workers < 0:
            raise ValueError("SFTConfig needs lr > 0, weight_decay >= 0, warmup_steps >= 0, num_workers >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"SFTConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not self.ks or min(self.ks) < 1 or max(self.ks) > self.beam_width:
            raise ValueError(f"SFTConfig.ks must be positive and <= beam_width={self.beam_width}, got {self.ks}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"SFTConfig.max_steps must be >= 1 or None, got {self.max_steps}")
        if self.wall_clock_cap_s is not None and self.wall_clock_cap_s <= 0:
            raise ValueError(f"SFTConfig.wall_clock_cap_s must be > 0 or None, got {self.wall_clock_cap_s}")
        if self.train_positions not in ("last", "all"):
            raise ValueError(f"SFTConfig.train_positions must be 'last' or 'all', got {self.train_positions!r}")
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(f"SFTConfig.window_stride must be >= 1 or None, got {self.window_stride}")
        if 10 not in self.ks:
            raise ValueError(f"SFTConfig.ks must contain 10 (checkpointing and early stopping monitor {MONITOR})")


@dataclass(frozen=True, eq=False)
class SFTResult:
    best_checkpoint: Path | None  # None if no validation ran
    last_checkpoint: Path
    history: list[dict]  # per epoch: epoch, step, train_*/val_* metrics, lr-AdamW/pg1 (also across resumes)
    model: OxygenGenerator  # best weights (last if no best), eval mode, CPU
    encoder: ExampleEncoder
    generator_config: GeneratorConfig
    trie: SIDTrie
    best_score: float | None
    resumed_from: Path | None
    train_seconds: float
    over_wall_clock_cap: bool = False  # train_seconds > SFTConfig.wall_clock_cap_s (reported, training not stopped)


class MetricsHistory(Callback):
    """Per-epoch copy of ``trainer.callback_metrics``; part of the checkpoint, so it survives a resume."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def _record(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row: dict[str, float] = {"epoch": int(trainer.current_epoch), "step": int(trainer.global_step)}
        for k, v in trainer.callback_metrics.items():
            if k.endswith("_step"):
                continue
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        if self.rows and self.rows[-1]["epoch"] == row["epoch"]:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._record(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._record(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]


def _loggers(out_dir: Path) -> list:
    loggers: list = [CSVLogger(out_dir, name="logs")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out_dir, name="tensorboard"))
    return loggers


def _data_module(frames_or_datamodule, sid_table: SemanticIdTable, scenarios: Sequence[str],
                 base: GeneratorConfig, cfg: SFTConfig, encoder_path: Path, resume: bool) -> GeneratorDataModule:
    if isinstance(frames_or_datamodule, GeneratorDataModule):
        dm = frames_or_datamodule
        if list(dm.encoder.scenarios) != list(scenarios):
            raise ValueError(f"datamodule encoder scenarios {list(dm.encoder.scenarios)} != scenarios {list(scenarios)}")
        if resume and encoder_path.exists():
            saved = ExampleEncoder.load(encoder_path, sid_table)
            if saved.to_dict() != dm.encoder.to_dict():
                raise ValueError(f"resuming from {encoder_path.parent} but the datamodule's encoder differs from "
                                 f"{encoder_path}; use a fresh out_dir")
        return dm
    parts = split_frames(frames_or_datamodule)
    if resume and encoder_path.exists():
        encoder = ExampleEncoder.load(encoder_path, sid_table)  # token ids must match the checkpoint
        if list(encoder.scenarios) != list(scenarios):
            raise ValueError(f"{encoder_path} has scenarios {list(encoder.scenarios)}, given {list(scenarios)}")
    else:
        if "train" not in parts or parts["train"].empty:
            raise ValueError("the train split is empty: nothing to train on")
        encoder = ExampleEncoder.fit(parts["train"], sid_table, scenarios, EncoderConfig.from_generator(base))
    if cfg.train_positions == "all" and base.history_encoder != "causal":
        raise ValueError("SFTConfig.train_positions='all' needs GeneratorConfig.history_encoder='causal'")
    return GeneratorDataModule(parts, encoder, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                               num_workers=cfg.num_workers, seed=cfg.seed, train_positions=cfg.train_positions,
                               window_stride=cfg.window_stride)


def train_generator(
    frames_or_datamodule: pd.DataFrame | Mapping[str, pd.DataFrame] | GeneratorDataModule,
    sid_table: SemanticIdTable,
    scenarios: Sequence[str],
    generator_config: GeneratorConfig = GeneratorConfig(),
    sft_config: SFTConfig = SFTConfig(),
    out_dir: str | Path = "sft",
    callbacks: Sequence[Callback] = (),
) -> SFTResult:
    """SFT of the generator on the frames' train split, early stopping on valid ``val_hr10`` (module docstring).

    ``frames_or_datamodule``: the training frame with a ``split`` column, a mapping split -> frame, or a
    ready :class:`GeneratorDataModule`. ``callbacks`` are extra Lightning callbacks (e.g. for monitoring)."""
    cfg = sft_config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.ckpt"
    resume_path = last if cfg.resume and last.exists() else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = _data_module(frames_or_datamodule, sid_table, scenarios, generator_config, cfg, out / "encoder.json",
                      resume_path is not None)
    gen_cfg = dm.encoder.generator_config(generator_config)
    dm.encoder.check_config(gen_cfg)
    if resume_path is not None:
        saved_cfg = _hparams_config(read_checkpoint(resume_path), resume_path)
        if saved_cfg != gen_cfg:
            diff = {k: (v, getattr(gen_cfg, k)) for k, v in asdict(saved_cfg).items() if v != getattr(gen_cfg, k)}
            raise ValueError(f"{resume_path} was trained with another generator config (saved vs now: {diff}); "
                             "use a fresh out_dir or resume=False")
    dm.encoder.save(out / "encoder.json")

    trie = SIDTrie.from_codes(sid_table.codes, gen_cfg.vocab_sizes)
    module = GeneratorModule(
        gen_cfg.to_dict(), lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
        min_lr_ratio=cfg.min_lr_ratio, beam_width=cfg.beam_width, ks=cfg.ks, trie=trie,
    )
    ckpt = ModelCheckpoint(dirpath=out, filename="best", monitor=MONITOR, mode="max", save_top_k=1, save_last=True,
                           auto_insert_metric_name=False)
    history = MetricsHistory()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    warn_only_before = torch.is_deterministic_algorithms_warn_only_enabled()
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        default_root_dir=out,
        logger=_loggers(out),
        callbacks=[ckpt, EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience),
                   LearningRateMonitor(logging_interval="step"), history, *callbacks],
        enable_progress_bar=cfg.enable_progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        check_val_every_n_epoch=cfg.val_every_n_epochs,
        gradient_clip_val=cfg.gradient_clip_val,
        log_every_n_steps=1,  # epoch-level metrics; silences the "fewer batches than log interval" warning
        use_distributed_sampler=False,  # EpochShuffleSampler shards itself: DDP keeps the single-process batches
    )
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # single-process CPU training on purpose (2 shared cores); tensors are already in memory
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            # out_dir holds encoder.json (and logs) next to the checkpoints by design
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            trainer.fit(module, datamodule=dm, ckpt_path=resume_path, weights_only=True)
    finally:
        # Trainer(deterministic=True) switches torch to deterministic algorithms process-wide: undo it
        torch.use_deterministic_algorithms(deterministic_before, warn_only=warn_only_before)
    train_seconds = time.perf_counter() - t0
    over_cap = cfg.wall_clock_cap_s is not None and train_seconds > cfg.wall_clock_cap_s
    if over_cap:
        warnings.warn(f"SFT took {train_seconds:.0f} s, over the wall-clock cap of {cfg.wall_clock_cap_s:.0f} s "
                      "(reported only: the budget is max_epochs / max_steps)", stacklevel=2)

    best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    last_path = Path(ckpt.last_model_path) if ckpt.last_model_path else last
    model = load_generator(best if best is not None else last_path)
    score = ckpt.best_model_score
    return SFTResult(
        best_checkpoint=best,
        last_checkpoint=last_path,
        history=[dict(r) for r in history.rows],
        model=model,
        encoder=dm.encoder,
        generator_config=gen_cfg,
        trie=trie,
        best_score=float(score) if score is not None else None,
        resumed_from=resume_path,
        train_seconds=train_seconds,
        over_wall_clock_cap=over_cap,
    )


# ----------------------------------------------------------------------------------------------- checkpoints
def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)``; ValueError naming the file if it is missing, corrupt or holds
    anything but tensors and primitive containers."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, pickle of disallowed objects, ...
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def _hparams_config(ckpt: dict, path: Path) -> GeneratorConfig:
    if ckpt.get("format") == SAVED_FORMAT:
        raw = ckpt.get("generator_config")
    else:
        raw = (ckpt.get("hyper_parameters") or {}).get("generator_config")
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint {path} has no generator_config (not an SFT checkpoint or generator file)")
    try:
        return GeneratorConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path} has an incompatible generator_config: {e}") from e


def load_generator(checkpoint_path: str | Path, map_location: str | torch.device = "cpu") -> OxygenGenerator:
    """The generator (eval mode) of a Lightning SFT checkpoint or a :func:`save_generator` file."""
    path = Path(checkpoint_path)
    ckpt = read_checkpoint(path, map_location)
    cfg = _hparams_config(ckpt, path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} has no state_dict")
    if ckpt.get("format") != SAVED_FORMAT:  # Lightning: the generator lives under "model."
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    model = OxygenGenerator(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} parameter(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} e.g. {unexpected[:3]}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise ValueError(f"checkpoint {path} does not match its generator config: " + "; ".join(parts))
    model.load_state_dict(state)
    return model.eval()


def save_generator(model: OxygenGenerator, path: str | Path) -> Path:
    """A compact weights file {format, generator_config, state_dict} (no optimizer/trainer state)."""
    payload = {"format": SAVED_FORMAT, "generator_config": model.cfg.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))
