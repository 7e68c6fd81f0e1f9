"""LightningDataModule turning a leave-last-out split into padded next-item batches.

All tensors are indices from :class:`~models.eval.split.IdEncoder` s (0 = padding), left-padded to ``L = max_len``:

* train: windows of each user's train sequence ``s`` (``n`` items), built by :func:`train_windows`: the
  ``L + 1`` items ``s[max(0, e - L - 1) : e]`` ending at ``e = n, n - stride, n - 2 stride, ...`` down to the
  first window that starts at ``s[0]``; ``inputs = w[:-1]``, ``targets = w[1:]``. In every window but that
  earliest one only the last ``stride`` targets carry loss (the others are set to 0 = no target), so each
  target is trained exactly **once** per epoch and sees ``>= L + 1 - stride`` items of context (or its whole
  prefix). ``stride=None``: only the last window, all its targets.
* valid/test: ``inputs = history[-L:]``; ``targets`` is all padding except the last position, which holds
  the held-out item, so one loss function serves train and evaluation; ``seen`` is the full history
  (left-padded to the longest history) for ranking with seen items excluded.
  The valid history is the train sequence; the test history is train + validation item.
* ``scenarios`` (when the module has a scenario encoder): aligned with ``inputs``, the scenario of the
  event *after* each input position, i.e. of its target; for valid/test the last position holds the held-out
  event's scenario.

Batches are dicts ``{"inputs": [B, L], "targets": [B, L]}`` (+ ``"scenarios": [B, L]``, + ``"seen": [B, H]``
for valid/test). Shuffling uses a generator seeded with ``seed``, so an epoch order depends on the seed only.
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


def train_windows(
    sequences: list[np.ndarray], max_len: int, stride: int | None, values: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Training windows of encoded sequences (see the module docstring), vectorized.

    Returns ``inputs`` and ``targets`` [W, max_len] (int64, left-padded, target 0 = no loss) and, when
    ``values`` (per-event values aligned with ``sequences``, e.g. encoded scenarios) is given, the value of
    each input position's *next* event [W, max_len] (0 on padding), else None. Sequences with < 2 items give
    no window. A ``stride`` above ``max_len`` acts as ``max_len``.
    """
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be >= 1 or None, got {stride}")
    if stride is not None:
        stride = min(stride, max_len)
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if values is not None and (len(values) != len(sequences) or any(len(v) != n for v, n in zip(values, lengths))):
        raise ValueError("values must be aligned with sequences (one value per event)")
    use = lengths >= 2
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[use]  # offset of each sequence in the flat array
    n = lengths[use]
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.empty(0, np.int64)
    if stride is None:
        n_windows = np.ones_like(n)
        step = 0
    else:
        # window k ends at e = n - k * stride; the earliest is the first with e - max_len - 1 <= 0
        n_windows = np.maximum(0, -(-(n - max_len - 1) // stride)) + 1
        step = stride
    seq_of = np.repeat(np.arange(len(n)), n_windows)
    k = np.arange(int(n_windows.sum())) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    end = n[seq_of] - k * step  # exclusive end of the window in its sequence
    lo = np.maximum(0, end - max_len - 1)  # first item of the window
    # column c of the inputs holds item i = end - 1 - max_len + c (its target is item i + 1)
    i = end[:, None] - 1 - max_len + np.arange(max_len)[None, :]
    real = i >= lo[:, None]
    earliest = lo == 0
    carries = real & (earliest[:, None] | (stride is None) | (i + 1 >= (end - step)[:, None]))
    base = starts[seq_of][:, None]
    gather = np.where(real, base + i, 0)
    inputs = np.where(real, flat[gather], 0)
    targets = np.where(carries, flat[np.where(real, gather + 1, 0)], 0)
    nxt = None
    if values is not None:
        flat_v = np.concatenate([np.asarray(v, dtype=np.int64) for v in values]) if len(values) else np.empty(0, np.int64)
        nxt = np.where(real, flat_v[np.where(real, gather + 1, 0)], 0)
    return inputs, targets, nxt


def train_tensors(
    sequences: list[np.ndarray],
    max_len: int,
    stride: int | None = None,
    scenarios: list[np.ndarray] | None = None,
) -> dict[str, torch.Tensor]:
    """``inputs`` / ``targets`` (and ``scenarios`` of the next events if given) [W, max_len] over the
    :func:`train_windows` of encoded train sequences."""
    inputs, targets, nxt = train_windows(sequences, max_len, stride, scenarios)
    if len(inputs) == 0:
        raise ValueError("no user has >= 2 train interactions: nothing to train on")
    out = {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets)}
    if nxt is not None:
        out["scenarios"] = torch.from_numpy(nxt)
    return out


def next_event_values(histories: list[np.ndarray], last: np.ndarray) -> list[np.ndarray]:
    """Per history, the value of the event after each position: ``history[1:] + [last[b]]``."""
    last = np.asarray(last)
    return [np.append(np.asarray(h[1:], dtype=np.int64), np.int64(x)) for h, x in zip(histories, last)]


def eval_tensors(
    histories: list[np.ndarray],
    targets: np.ndarray,
    max_len: int,
    *,
    history_scenarios: list[np.ndarray] | None = None,
    scenarios: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Input, last-position target and full-history tensors for evaluation cases (encoded indices); with
    encoded ``history_scenarios`` and target ``scenarios`` also the next-event ``scenarios`` tensor."""
    inputs = left_pad(histories, max_len)
    tgt = torch.zeros_like(inputs)
    tgt[:, -1] = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    width = max(1, max((len(h) for h in histories), default=1))
    out = {"inputs": inputs, "targets": tgt, "seen": left_pad(histories, width)}
    if history_scenarios is not None:
        if scenarios is None:
            raise ValueError("history_scenarios needs the cases' target scenarios")
        out["scenarios"] = left_pad(next_event_values(history_scenarios, scenarios), max_len)
    return out


class SequenceDataModule(L.LightningDataModule):
    """Train / valid / test loaders for SASRec-style models from a :class:`LeaveLastOutSplit`.

    ``encoder`` maps the split's raw item ids to indices; by default it is ``encode_ids(split.items)``
    (deterministic: sorted unique ids), i.e. the catalog is every item present in the split.
    ``scenario_encoder`` (e.g. ``encode_ids(split scenarios)``): when given, batches carry ``scenarios``.
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
        scenario_encoder: IdEncoder | None = None,
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
        if scenario_encoder is not None:
            if scenario_encoder.offset != 1:
                raise ValueError("scenario_encoder needs padding index 0 (encode_ids(padding=True))")
            if split.scenario_sequences is None:
                raise ValueError("a scenario_encoder was given but the split has no scenario column")
        self.scenario_encoder = scenario_encoder
        self._datasets: dict[str, TensorDictDataset] = {}

    @property
    def n_items(self) -> int:
        return self.encoder.n_ids

    def encoded_cases(self, stage: str) -> EvalCases:
        """The split's valid/test cases with items (and, with a scenario encoder, history scenarios) encoded;
        ``scenarios`` (the targets') keep their raw names."""
        cases = self.split.eval_cases(stage)  # type: ignore[arg-type]
        enc = self.encoder.encode
        return EvalCases(
            users=cases.users,
            histories=[enc(h) for h in cases.histories],
            targets=enc(cases.targets),
            scenarios=cases.scenarios,
            history_scenarios=cases.history_scenarios,
        )

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return  # built once; the split does not change
        users = list(self.split.sequences)
        train_seqs = [self.encoder.encode(self.split.sequences[u]) for u in users]
        scen = None
        if self.scenario_encoder is not None:
            scen = [self.scenario_encoder.encode(self.split.scenario_sequences[u].astype(str)) for u in users]
        self._datasets["train"] = TensorDictDataset(**train_tensors(train_seqs, self.max_len, self.window_stride, scen))
        for name in ("valid", "test"):
            cases = self.encoded_cases(name)
            if len(cases) == 0:
                raise ValueError(f"the split has no {name} cases (every user has < min_interactions interactions)")
            extra = {}
            if self.scenario_encoder is not None:
                se = self.scenario_encoder
                extra = {
                    "history_scenarios": [se.encode(h.astype(str)) for h in cases.history_scenarios],
                    "scenarios": se.encode(cases.scenarios.astype(str)),
                }
            self._datasets[name] = TensorDictDataset(
                **eval_tensors(cases.histories, cases.targets, self.max_len, **extra)
            )

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self._datasets["train"], batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._datasets["valid"], batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._datasets["test"], batch_size=self.eval_batch_size)
