"""LightningDataModule turning a leave-last-out split into padded next-item batches.

All tensors are item indices from an :class:`~models.eval.split.IdEncoder` (0 = padding), left-padded:

* train: windows ``w`` of each user's train sequence ``s`` (``L = max_len``): with ``window_stride=None``
  only ``w = s[-(L+1):]``, else the last ``L + 1`` items of every prefix ``s[:n], s[:n - stride], ...``;
  ``inputs = w[:-1]``, ``targets = w[1:]``: every position predicts the next item.
* valid/test: ``inputs = history[-L:]``; ``targets`` is all padding except the last position, which holds
  the held-out item, so one loss function serves train and evaluation; ``seen`` is the full history
  (left-padded to the longest history) for ranking with seen items excluded.
  The valid history is the train sequence; the test history is train + validation item.

Batches are dicts ``{"inputs": [B, L], "targets": [B, L]}`` (+ ``"seen": [B, H]`` for valid/test).
Shuffling uses a generator seeded with ``seed``, so an epoch order depends on the seed only.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.eval.split import EvalCases, IdEncoder, LeaveLastOutSplit, encode_ids
from models.nn.sasrec import left_pad

__all__ = ["SequenceDataModule", "TensorDictDataset", "eval_tensors", "train_tensors", "train_windows"]


class TensorDictDataset(Dataset):
    """Rows of several aligned tensors, returned as a dict (default collate stacks them)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        sizes = {t.shape[0] for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"tensors must share their first dimension, got {sizes}")
        self.tensors = tensors
        self.size = sizes.pop()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: t[i] for name, t in self.tensors.items()}


def train_windows(sequences: list[np.ndarray], max_len: int, stride: int | None) -> list[np.ndarray]:
    """Training windows: the last ``max_len + 1`` items of the prefixes ``s[:n], s[:n - stride], ...``
    (prefixes of >= 2 items) of each sequence ``s`` of length ``n``; ``stride=None`` keeps only ``s[-max_len-1:]``.

    With a stride every target is trained about ``max_len / stride`` times per epoch, each time with (up to)
    a different left context; prefixes near the start of ``s`` are short, as they are in reality.
    """
    if stride is None:
        return [s[-(max_len + 1) :] for s in sequences if len(s) >= 2]
    if stride < 1:
        raise ValueError(f"stride must be >= 1 or None, got {stride}")
    return [s[max(0, end - max_len - 1) : end] for s in sequences for end in range(len(s), 1, -stride)]


def train_tensors(sequences: list[np.ndarray], max_len: int, stride: int | None = None) -> dict[str, torch.Tensor]:
    """Shifted input/target tensors [W, max_len] over the :func:`train_windows` of encoded train sequences
    (sequences with < 2 items give no window): ``inputs = w[:-1]``, ``targets = w[1:]``, left-padded."""
    windows = train_windows(sequences, max_len, stride)
    if not windows:
        raise ValueError("no user has >= 2 train interactions: nothing to train on")
    return {
        "inputs": left_pad([w[:-1] for w in windows], max_len),
        "targets": left_pad([w[1:] for w in windows], max_len),
    }


def eval_tensors(histories: list[np.ndarray], targets: np.ndarray, max_len: int) -> dict[str, torch.Tensor]:
    """Input, last-position target and full-history tensors for evaluation cases (encoded indices)."""
    inputs = left_pad(histories, max_len)
    tgt = torch.zeros_like(inputs)
    tgt[:, -1] = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    width = max(1, max((len(h) for h in histories), default=1))
    return {"inputs": inputs, "targets": tgt, "seen": left_pad(histories, width)}


class SequenceDataModule(L.LightningDataModule):
    """Train / valid / test loaders for SASRec-style models from a :class:`LeaveLastOutSplit`.

    ``encoder`` maps the split's raw item ids to indices; by default it is ``encode_ids(split.items)``
    (deterministic: sorted unique ids), i.e. the catalog is every item present in the split.
    """

    def __init__(
        self,
        split: LeaveLastOutSplit,
        *,
        max_len: int = 50,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        seed: int = 0,
        window_stride: int | None = None,
        encoder: IdEncoder | None = None,
    ) -> None:
        super().__init__()
        self.split = split
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.window_stride = window_stride
        self.encoder = encoder if encoder is not None else encode_ids(split.items)
        if self.encoder.offset != 1:
            raise ValueError("SequenceDataModule needs an encoder with padding index 0 (encode_ids(padding=True))")
        self._datasets: dict[str, TensorDictDataset] = {}

    @property
    def n_items(self) -> int:
        return self.encoder.n_ids

    def encoded_cases(self, stage: str) -> EvalCases:
        """The split's valid/test cases with items encoded."""
        cases = self.split.eval_cases(stage)  # type: ignore[arg-type]
        enc = self.encoder.encode
        return EvalCases(
            users=cases.users,
            histories=[enc(h) for h in cases.histories],
            targets=enc(cases.targets),
            scenarios=cases.scenarios,
        )

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return  # built once; the split does not change
        train_seqs = [self.encoder.encode(s) for s in self.split.sequences.values()]
        self._datasets["train"] = TensorDictDataset(**train_tensors(train_seqs, self.max_len, self.window_stride))
        for name in ("valid", "test"):
            cases = self.encoded_cases(name)
            if len(cases) == 0:
                raise ValueError(f"the split has no {name} cases (every user has < min_interactions interactions)")
            self._datasets[name] = TensorDictDataset(**eval_tensors(cases.histories, cases.targets, self.max_len))

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self._datasets["train"], batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._datasets["valid"], batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._datasets["test"], batch_size=self.eval_batch_size)
