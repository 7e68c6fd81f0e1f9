"""Encoded examples -> generator training batches, and the LightningDataModule over the three splits.

Input: the frame of ``historical_features(..., service="training")`` (feature_repo/README.md), one row per
target interaction. List columns may hold lists, numpy arrays, pyarrow lists or None (= empty).

:class:`ExampleEncoder` (models/features/example_encoder.py, fitted on the train split) maps a frame to the batch
dict of :class:`models.nn.OxygenGenerator`; this module turns those tensors into training data.

:class:`GeneratorDataModule` encodes each split once into tensors; a batch is gathered with one index per
tensor (``__getitems__``), and the train order is a permutation seeded by ``(seed, epoch)``, so an epoch's
order depends only on the seed and the epoch number (also after resuming from a checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from models.features.example_encoder import (  # re-exported: the DataModule and train.py use them with the encoder
    BATCH_KEYS,
    SPLITS,
    TRAIN_POSITIONS,
    EncoderConfig,
    ExampleEncoder,
)
from models.nn.instruction_age import NO_AGE
from models.semantic_ids.codebook import SemanticIdTable

__all__ = [
    "BATCH_KEYS",
    "EncoderConfig",
    "GroupedEpochSampler",
    "SequenceWindowDataset",
    "SequenceWindows",
    "sequence_windows",
    "EpochShuffleSampler",
    "ExampleEncoder",
    "GeneratorDataModule",
    "TensorBatchDataset",
]

def _event_order_key(frame: pd.DataFrame) -> np.ndarray:
    """int64 event time per row: ``event_timestamp`` (microseconds, unique per user in the Feast frame) if present,
    else ``target_timestamp``; ties keep row order (stable sorts)."""
    if "event_timestamp" in frame.columns:
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()
    if "target_timestamp" in frame.columns:
        return frame["target_timestamp"].to_numpy(dtype=np.int64)
    raise ValueError(f"frame needs 'event_timestamp' or 'target_timestamp' to order a user's examples; has {list(frame.columns)}")


@dataclass(frozen=True, eq=False)
class SequenceWindows:
    """Right-aligned windows over users' item sequences, for training every position at once.

    A user's sequence is the (oldest first) history of their earliest example (items before it that are not
    examples themselves, e.g. a user's very first interaction) followed by the targets of their examples in event
    order. ``slot_codes`` Long[N, L+1] / ``slot_example`` Long[N] (row of the encoded frame, -1 = history-only
    item) describe all slots of all users; ``index`` Long[n, W] holds each window's slots (-1 = padding, real
    slots at the right end) and ``loss`` Bool[n, W] the slots whose target trains in that window: every example
    is a target in exactly one window, with at least W - stride earlier items in its window unless its window is
    the user's first one (SASRec's sampler). ``profile_row`` Long[n] is the example whose profile the window
    uses (its newest example). ``consistency`` = share of examples whose own (truncated) long history equals the
    items before them in the rebuilt sequence (1.0 for the Feast training frame; lower means the frame has
    gaps, e.g. expired history or missing rows)."""

    slot_codes: torch.Tensor
    slot_example: torch.Tensor
    index: torch.Tensor
    loss: torch.Tensor
    profile_row: torch.Tensor
    consistency: float

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.loss.sum())


def sequence_windows(frame: pd.DataFrame, encoded: Mapping[str, torch.Tensor], window: int,
                     stride: int) -> SequenceWindows:
    """:class:`SequenceWindows` of ``frame`` (one row per example with ``user_id`` and an event time) and its
    encoding ``encoded = ExampleEncoder.encode(frame)`` (target_sids, long_sids, long_mask). ``window`` = W slots
    (history + the newest target), ``stride`` = targets per window after a user's first window (1..W-1).
    Vectorized: no loop over users or windows."""
    if window < 2 or not 1 <= stride <= window - 1:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window - 1, got window={window}, stride={stride}")
    if "user_id" not in frame.columns:
        raise ValueError(f"frame needs a 'user_id' column; has {list(frame.columns)}")
    n = len(frame)
    for key in ("target_sids", "long_sids", "long_mask"):
        if key not in encoded or int(encoded[key].shape[0]) != n:
            raise ValueError(f"encoded[{key!r}] must have one row per frame row ({n})")
    if n == 0:
        raise ValueError("sequence_windows: empty frame")
    users = pd.factorize(frame["user_id"].astype(str).to_numpy(), sort=True)[0]
    order = np.lexsort((_event_order_key(frame), users))  # by user, then time (stable)
    u_sorted = users[order]
    first = np.ones(n, dtype=bool)
    first[1:] = u_sorted[1:] != u_sorted[:-1]
    first_row = order[first]  # earliest example of every user (user rank = position in first_row)
    n_users = first_row.size
    user_rank = np.cumsum(first) - 1  # per sorted example
    n_ex = np.bincount(user_rank, minlength=n_users)

    long_mask = encoded["long_mask"].numpy()
    long_codes = encoded["long_sids"].numpy()
    n_pre = long_mask[first_row].sum(1) if long_mask.shape[1] else np.zeros(n_users, np.int64)
    # prefix slots: the first example's history, oldest first (long is newest first with real items in front)
    pre_user = np.repeat(np.arange(n_users), n_pre)
    pre_off = np.concatenate([[0], np.cumsum(n_pre)[:-1]])
    pre_j = np.arange(pre_user.size) - pre_off[pre_user]  # 0 = oldest
    pre_codes = long_codes[first_row[pre_user], n_pre[pre_user] - 1 - pre_j] if pre_user.size else \
        np.zeros((0, long_codes.shape[2]), np.int64)

    length = n_pre + n_ex
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    total = int(length.sum())
    codes = np.zeros((total, encoded["target_sids"].shape[1]), dtype=np.int64)
    example = np.full(total, -1, dtype=np.int64)
    codes[start[pre_user] + pre_j] = pre_codes
    ex_j = np.arange(n) - np.concatenate([[0], np.cumsum(n_ex)[:-1]])[user_rank]
    ex_slot = start[user_rank] + n_pre[user_rank] + ex_j
    codes[ex_slot] = encoded["target_sids"].numpy()[order]
    example[ex_slot] = order

    # consistency: each example's long history (newest first) vs the slots right before it
    width = long_mask.shape[1]
    if width:
        hist_len = long_mask[order].sum(1)
        j = np.arange(width)[None, :]
        before = ex_slot[:, None] - 1 - j
        valid = j < hist_len[:, None]
        inside = before >= start[user_rank][:, None]
        rebuilt = codes[np.where(valid & inside, before, 0)]
        same = ((rebuilt == long_codes[order]).all(-1) | ~valid).all(1) & (~valid | inside).all(1)
        consistency = float(same.mean())
    else:
        consistency = 1.0

    # windows: ends e_k = len - 1 - k * stride (k = 0, 1, ...) until a window starts at slot 0
    n_win = np.where(length > window, -(-(length - window) // stride), 0) + 1
    win_user = np.repeat(np.arange(n_users), n_win)
    k = np.arange(win_user.size) - np.concatenate([[0], np.cumsum(n_win)[:-1]])[win_user]
    end = length[win_user] - 1 - k * stride
    lo = np.maximum(0, end - window + 1)
    last = k == n_win[win_user] - 1  # the user's first (earliest) window starts at slot 0
    loss_lo = np.where(last, 0, end - stride + 1)
    pos = end[:, None] - (window - 1) + np.arange(window)[None, :]  # slot positions within the user, right-aligned
    real = pos >= lo[:, None]
    index = np.where(real, start[win_user][:, None] + np.maximum(pos, 0), -1)
    is_example = example[np.maximum(index, 0)] >= 0
    loss = real & (pos >= loss_lo[:, None]) & is_example
    profile_row = example[start[win_user] + end]
    useful = loss.any(1)  # a window that ends inside the history-only prefix trains nothing
    return SequenceWindows(torch.from_numpy(codes), torch.from_numpy(example), torch.from_numpy(index[useful]),
                           torch.from_numpy(loss[useful]), torch.from_numpy(profile_row[useful]), consistency)


class SequenceWindowDataset(Dataset):
    """Batches of :class:`SequenceWindows` in the ``OxygenGenerator.forward_sequence`` format; per-slot context
    (scenario, instruction) and the profile are gathered from the encoded examples. Leading columns that are
    padding in every window of a batch are dropped (positions are right-aligned, so this changes nothing)."""

    def __init__(self, windows: SequenceWindows, encoded: Mapping[str, torch.Tensor]) -> None:
        self.windows = windows
        self.encoded = {k: encoded[k] for k in ("scenario", "instruction_emb", "has_instruction", "instruction_age",
                                                "profile") if k in encoded or k != "instruction_age"}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        w = self.windows
        idx = w.index[torch.as_tensor(indices, dtype=torch.long)]
        real = idx >= 0
        keep = int(real.any(0).long().argmax()) if bool(real.any()) else idx.shape[1] - 2
        keep = min(keep, idx.shape[1] - 2)  # at least two slots
        idx, real = idx[:, keep:], real[:, keep:]
        loss = w.loss[torch.as_tensor(indices, dtype=torch.long)][:, keep:]
        slot = idx.clamp(min=0)
        ex = torch.where(real, w.slot_example[slot], -1)
        has_ex = ex >= 0
        exc = ex.clamp(min=0)
        e = self.encoded
        out = {
            "seq_sids": torch.where(real[..., None], w.slot_codes[slot], 0),
            "seq_mask": real,
            "seq_loss_mask": loss,
            "seq_scenario": torch.where(has_ex, e["scenario"][exc], 0),
            "seq_instruction_emb": e["instruction_emb"][exc] * has_ex[..., None],
            "seq_has_instruction": e["has_instruction"][exc] & has_ex,
            "profile": e["profile"][w.profile_row[torch.as_tensor(indices, dtype=torch.long)]],
        }
        if "instruction_age" in e:  # history-only slots have no instruction
            out["seq_instruction_age"] = torch.where(has_ex, e["instruction_age"][exc], NO_AGE)
        return out


# ----------------------------------------------------------------------------------------------- data module
class TensorBatchDataset(Dataset):
    """Aligned tensors; ``__getitems__`` gathers a whole batch with one index op per tensor."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        sizes = {k: int(t.shape[0]) for k, t in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors must share their first dimension, got {sizes}")
        self.tensors = dict(tensors)
        self.size = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: t[i] for k, t in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: t[idx] for k, t in self.tensors.items()}


def _batch_collate(batch):
    """``__getitems__`` already returns a stacked batch (module-level so worker processes can pickle it)."""
    return batch


class EpochShuffleSampler(Sampler[int]):
    """Permutation of ``range(n)`` seeded by ``(seed, epoch)``; Lightning calls ``set_epoch`` every epoch.

    Distributed (``torch.distributed`` initialised, W processes): rank r takes positions r, r + W, r + 2W, ... of
    the same permutation (padded by wrapping around to a multiple of W), so with a per-process batch b the W
    batches of one step are exactly the single-process batch of size W * b: DDP sees the same global batches.
    The Trainer must then leave the sampler alone (``use_distributed_sampler=False``)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @staticmethod
    def _world() -> tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        world, rank = self._world()
        if world > 1:
            order = np.resize(order, len(self) * world)[rank::world]  # wrap around so every rank has len(self)
        return iter(order.tolist())

    def __len__(self) -> int:
        world, _ = self._world()
        return -(-self.n // world)


class GroupedEpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` seeded by ``(seed, epoch)`` in which every run of ``batch_size`` consecutive
    indices (one batch) comes from one group, except the final one or two batches (each group's remainder).
    Batches of sequence windows with equally many training targets decode no wasted rows; groups, the members of
    each batch and the batch order are all random per epoch."""

    def __init__(self, groups, batch_size: int, seed: int = 0) -> None:
        self.groups = np.asarray(groups)
        if self.groups.ndim != 1:
            raise ValueError(f"groups must be 1-D, got shape {self.groups.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.seed, self.epoch = int(batch_size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        bs, full, rest = self.batch_size, [], []
        for g in np.unique(self.groups):  # a handful of groups
            idx = rng.permutation(np.flatnonzero(self.groups == g))
            k = len(idx) // bs * bs
            full.extend(idx[:k].reshape(-1, bs))
            rest.append(idx[k:])
        order = rng.permutation(len(full))
        out = np.concatenate([np.asarray(full, dtype=np.int64).reshape(-1, bs)[order].reshape(-1), *rest])
        return iter(out.tolist())

    def __len__(self) -> int:
        return int(self.groups.size)


class GeneratorDataModule(L.LightningDataModule):
    """Train / valid / test loaders of encoded examples.

    ``frames``: one frame with a ``split`` column ("train"/"valid"/"test") or a mapping split -> frame.
    Batches are dicts of :data:`BATCH_KEYS`. Train and valid must be non-empty; test may be empty.

    ``train_positions="all"`` (for ``history_encoder="causal"``): a train batch is ``batch_size`` windows of
    users' sequences (:func:`sequence_windows`, W = max_long + 1 slots, ``window_stride`` targets per later
    window, default W // 2) in the ``forward_sequence`` format, so one pass trains every train example once.
    ``"last"``: one example per row (its own features). Validation and test are always per example."""

    def __init__(
        self,
        frames: pd.DataFrame | Mapping[str, pd.DataFrame],
        encoder: ExampleEncoder,
        *,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        train_positions: str = "last",
        window_stride: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if train_positions not in TRAIN_POSITIONS:
            raise ValueError(f"train_positions must be one of {TRAIN_POSITIONS}, got {train_positions!r}")
        self.train_positions = train_positions
        self.window = encoder.config.max_long + 1
        self.window_stride = int(window_stride or max(1, self.window // 2))
        self.frames = split_frames(frames)
        self.encoder = encoder
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.datasets: dict[str, TensorBatchDataset] = {}

    @classmethod
    def from_frames(
        cls,
        frames: pd.DataFrame | Mapping[str, pd.DataFrame],
        sid_table: SemanticIdTable,
        scenarios: Sequence[str],
        encoder_config: EncoderConfig = EncoderConfig(),
        **kwargs,
    ) -> "GeneratorDataModule":
        """Fit an :class:`ExampleEncoder` on the train split and wrap the frames."""
        parts = split_frames(frames)
        encoder = ExampleEncoder.fit(parts["train"], sid_table, scenarios, encoder_config)
        return cls(parts, encoder, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return  # the frames do not change: encode once
        for name in SPLITS:
            frame = self.frames.get(name)
            if frame is None or frame.empty:
                if name != "test":
                    raise ValueError(f"the {name!r} split is empty: the generator needs train and valid examples")
                continue
            encoded = self.encoder.encode(frame)
            if name == "train" and self.train_positions == "all":
                self.windows = sequence_windows(frame, encoded, self.window, self.window_stride)
                self.datasets[name] = SequenceWindowDataset(self.windows, encoded)
            else:
                self.datasets[name] = TensorBatchDataset(encoded)

    def _loader(self, name: str, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        if name not in self.datasets:
            self.setup()
        if name not in self.datasets:
            raise ValueError(f"no {name!r} examples")
        ds = self.datasets[name]
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=_batch_collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            self.setup()
        if self.train_positions == "all":  # a user's first window (more targets) vs later windows (stride targets)
            targets = self.windows.loss.sum(1).numpy()
            sampler = GroupedEpochSampler(targets > self.window_stride, self.batch_size, self.seed)
        else:
            sampler = EpochShuffleSampler(len(self.datasets["train"]), self.seed)
        return self._loader("train", self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)


def split_frames(frames: pd.DataFrame | Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """{"train", "valid", "test"} -> frame, from one frame with a ``split`` column or a mapping."""
    if isinstance(frames, pd.DataFrame):
        if "split" not in frames.columns:
            raise ValueError(f"frame has no 'split' column; has {list(frames.columns)}")
        labels = frames["split"].astype(str)
        unknown = sorted(set(labels.unique()) - set(SPLITS))
        if unknown:
            raise ValueError(f"frame.split has unknown label(s) {unknown}; expected {SPLITS}")
        return {s: frames[labels.to_numpy() == s].reset_index(drop=True) for s in SPLITS}
    if isinstance(frames, Mapping):
        unknown = sorted(set(frames) - set(SPLITS))
        if unknown:
            raise ValueError(f"frames has unknown split name(s) {unknown}; expected {SPLITS}")
        for k, v in frames.items():
            if not isinstance(v, pd.DataFrame):
                raise ValueError(f"frames[{k!r}] must be a DataFrame, got {type(v).__name__}")
        return {s: frames[s] for s in SPLITS if s in frames}
    raise ValueError(f"frames must be a DataFrame or a mapping split -> DataFrame, got {type(frames).__name__}")
