"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), optionally scenario-aware.

Items are encoded ``1..n_items``; 0 is padding. Sequences are **left**-padded to ``T <= max_len`` and the
positional embedding is right-aligned (the last item always gets position ``max_len - 1``), as in the
original, so adding (or cutting) left padding changes nothing.

    x_0 = Dropout(E[s_t] * sqrt(d) + P[max_len - T + t] (+ S[c_t]))   E: items (row 0 = 0), P: positions
    for each of n_blocks (pre-LayerNorm):
        x = x + Dropout(CausalSelfAttention(LN(x)))                query t attends to keys j <= t that are items
        x = x + Dropout(W2 Dropout(ReLU(W1 LN(x))))               point-wise feed-forward, width d
    h = LN(x)                                                     [B, T, d]
    score(t, i) = h_t . E[i]                                      tied input/output item embeddings

**Scenario-aware variant** (``config.scenario_aware``): ``c_t`` is the scenario of the event *after* position
``t``, i.e. the scenario the target of position ``t`` happens in (the request's scenario), and ``S`` a learned
table over the model's scenario vocabulary ``scenarios`` (row 0 = padding = 0). At recommendation time the
last position gets the request's scenario and every earlier position the scenario of the next history event,
exactly as in training. The plain model ignores scenarios.

Training: full-softmax cross-entropy over all items at every position with a target (0 = no target),
``loss = mean_{t: y_t != 0} -log softmax(score(t, .))[y_t]`` with the padding item excluded.
Ranking: the scores of the last position; ``recommend(..., exclude_seen=True)`` also drops the history.

A padding query position (all its keys are padding) attends to itself only, so no row of the attention
is empty (no NaN); padding positions never act as keys for real items, so their values never matter.

Initialisation: item and position tables Xavier-normal (as the original), Linear layers PyTorch's default;
LayerNorm eps 1e-8 (the original's TF epsilon).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.eval.metrics import top_k
from models.eval.split import IdEncoder

__all__ = ["SASRec", "SASRecConfig", "cut_left_padding", "left_pad"]

LAYER_NORM_EPS = 1e-8


@dataclass(frozen=True)
class SASRecConfig:
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 2e-3  # the original's 1e-3 reaches the same validation NDCG@10 in ~2/3 of the epochs at 2e-3
    adam_betas: tuple[float, float] = (0.9, 0.98)  # the original implementation's beta2
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200  # a cap; early stopping (patience) ends training long before on the data seen so far
    patience: int = 20  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
    # training windows (models/lightning/sequence_data.py): windows of max_len + 1 items ending every
    # `window_stride` items from the end of a user's train sequence; in all but the earliest window only the
    # last `window_stride` targets carry loss, so every target is trained exactly once per epoch, with
    # >= max_len + 1 - window_stride items of context (or its whole prefix). None = only the last window;
    # a stride above max_len acts as max_len (consecutive windows, no target left out).
    window_stride: int | None = 25
    # add a learned embedding of the next event's scenario (the target's) to every input position
    scenario_aware: bool = False

    def __post_init__(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        for name in ("hidden", "n_blocks", "n_heads", "max_len", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(f"SASRecConfig.window_stride must be >= 1 or None, got {self.window_stride}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")


def left_pad(sequences: Sequence, max_len: int) -> torch.Tensor:
    """Keep the last ``max_len`` entries of each sequence, left-pad with 0 -> LongTensor [B, max_len]."""
    out = torch.zeros(len(sequences), max_len, dtype=torch.long)
    for b, seq in enumerate(sequences):  # loop over sequences (not items); each copy is one slice
        tail = torch.as_tensor(np.asarray(seq, dtype=np.int64)[-max_len:])
        if tail.numel():
            out[b, max_len - tail.numel() :] = tail
    return out


def cut_left_padding(seqs: torch.Tensor, *others: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Drop the leading columns that are padding in every row of ``seqs`` [B, T] (and the same columns of
    ``others``). Exact for SASRec, whose positions are right-aligned; saves work on batches of short rows."""
    has_item = (seqs != 0).any(0)
    first = int(has_item.to(torch.int8).argmax()) if bool(has_item.any()) else seqs.shape[1] - 1
    return (seqs[:, first:], *(o[:, first:] if o is not None else None for o in others))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.hidden, eps=LAYER_NORM_EPS)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden, eps=LAYER_NORM_EPS)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), allowed))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    """``SASRec(n_items, config)``; the scenario-aware variant also takes its scenario vocabulary
    ``scenarios`` (distinct names; index ``j + 1`` in scenario tensors is ``scenarios[j]``, 0 = padding)."""

    def __init__(self, n_items: int, config: SASRecConfig = SASRecConfig(), scenarios: Sequence[str] = ()) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        scenarios = tuple(str(s) for s in scenarios)
        if config.scenario_aware and not scenarios:
            raise ValueError("a scenario-aware SASRec (config.scenario_aware) needs its scenario names (scenarios=...)")
        if not config.scenario_aware and scenarios:
            raise ValueError("scenarios were given for a plain SASRec (config.scenario_aware=False)")
        self.n_items = n_items
        self.config = config
        self.scenarios = scenarios
        self._scenario_encoder = IdEncoder(ids=np.asarray(scenarios, dtype=object), offset=1) if scenarios else None
        self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.scenario_emb = nn.Embedding(len(scenarios) + 1, config.hidden, padding_idx=0) if scenarios else None
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(config.hidden, eps=LAYER_NORM_EPS)
        for table in (self.item_emb, self.pos_emb, self.scenario_emb):
            if table is not None:  # Xavier-normal embeddings as the original; Linear layers keep PyTorch's init
                nn.init.xavier_normal_(table.weight)
                if table.padding_idx is not None:
                    with torch.no_grad():
                        table.weight[table.padding_idx].zero_()

    # ----------------------------------------------------------------------------------------- scenarios
    def encode_scenarios(self, names) -> np.ndarray:
        """Scenario names -> indices ``1..n_scenarios`` (same shape); ValueError naming unknown ones."""
        if self._scenario_encoder is None:
            raise ValueError("this SASRec is not scenario-aware: it has no scenario vocabulary")
        names = np.asarray(names, dtype=object)
        try:
            return self._scenario_encoder.encode(names.astype(str) if names.size else names)
        except ValueError as e:
            raise ValueError(f"unknown scenario(s): {e}; this SASRec knows {list(self.scenarios)}") from None

    def _check_scenarios(self, seqs: torch.Tensor, scenarios: torch.Tensor | None) -> torch.Tensor | None:
        if not self.config.scenario_aware:
            return None
        if scenarios is None:
            raise ValueError("a scenario-aware SASRec needs the scenario of every input position (scenarios=...)")
        if scenarios.shape != seqs.shape:
            raise ValueError(f"scenarios must have the shape of seqs {tuple(seqs.shape)}, got {tuple(scenarios.shape)}")
        if bool(((scenarios < 0) | (scenarios > len(self.scenarios))).any()):
            raise ValueError(f"scenario indices must be in [0, {len(self.scenarios)}]")
        return scenarios

    # ------------------------------------------------------------------------------------------- forward
    def forward(self, seqs: torch.Tensor, scenarios: torch.Tensor | None = None) -> torch.Tensor:
        """Left-padded item indices [B, T] (T <= max_len) -> hidden states [B, T, hidden].

        ``scenarios`` [B, T]: scenario index of the event after each position (scenario-aware model only;
        ignored by the plain one)."""
        if seqs.ndim != 2:
            raise ValueError(f"seqs must be [B, T], got shape {tuple(seqs.shape)}")
        B, T = seqs.shape
        L = self.config.max_len
        if T > L:
            raise ValueError(f"sequence length {T} exceeds max_len={L}")
        scenarios = self._check_scenarios(seqs, scenarios)
        pos = torch.arange(L - T, L, device=seqs.device)  # right-aligned positions
        x = self.item_emb(seqs) * math.sqrt(self.config.hidden) + self.pos_emb(pos)
        if scenarios is not None:
            x = x + self.scenario_emb(scenarios)
        x = self.emb_drop(x)
        is_item = seqs != 0
        causal = torch.ones(T, T, dtype=torch.bool, device=seqs.device).tril()
        eye = torch.eye(T, dtype=torch.bool, device=seqs.device)
        # [B, 1, T, T]: key j visible to query t iff j <= t and j is an item (or j == t, see docstring)
        allowed = (causal & is_item[:, None, :]) | eye
        allowed = allowed[:, None]
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden [..., d] -> scores over the vocabulary [..., n_items + 1]; padding item at -inf."""
        logits = hidden @ self.item_emb.weight.T
        logits[..., 0] = float("-inf")
        return logits

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, scenarios: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-item cross-entropy over positions whose target is not padding (0)."""
        inputs, targets, scenarios = cut_left_padding(inputs, targets, scenarios)
        return self.loss_from_hidden(self(inputs, scenarios), targets)

    def loss_from_hidden(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy from hidden states [B, T, d]; logits only at positions with a target, over the real
        items (the padding item is no class)."""
        keep = targets != 0
        if not keep.any():
            raise ValueError("targets are all padding (0): no position to compute a loss on")
        return F.cross_entropy(hidden[keep] @ self.item_emb.weight[1:].T, targets[keep] - 1)

    def last_scores(self, seqs: torch.Tensor, scenarios: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the next item after each (left-padded) sequence: [B, n_items + 1]."""
        seqs, scenarios = cut_left_padding(seqs, scenarios)
        return self.item_logits(self(seqs, scenarios)[:, -1])

    def input_scenarios(self, scenarios, history_scenarios, lengths: Sequence[int]) -> list[np.ndarray]:
        """Per sequence, the encoded scenario of the event after each history position: the next history
        event's, and the request's (``scenarios[b]``) for the last one (names of :attr:`scenarios`)."""
        if scenarios is None or history_scenarios is None:
            raise ValueError(
                "a scenario-aware SASRec needs scenarios= (the request's scenario per sequence) and "
                "history_scenarios= (the scenario of every history event)"
            )
        if len(scenarios) != len(lengths) or len(history_scenarios) != len(lengths):
            raise ValueError(
                f"scenarios ({len(scenarios)}) and history_scenarios ({len(history_scenarios)}) need one entry "
                f"per sequence ({len(lengths)})"
            )
        out = []
        for n, req, hist in zip(lengths, scenarios, history_scenarios):  # loop over sequences, not events
            hist = np.asarray(hist, dtype=object)
            if len(hist) != n:
                raise ValueError(f"history_scenarios has {len(hist)} entries for a history of {n} items")
            out.append(np.concatenate([hist[1:], np.asarray([req], dtype=object)]))
        enc = self.encode_scenarios(np.concatenate(out) if out else np.empty(0, dtype=object))
        return np.split(enc, np.cumsum([len(o) for o in out])[:-1]) if out else []

    @torch.no_grad()
    def recommend(
        self,
        sequences: Sequence | torch.Tensor,
        k: int,
        *,
        scenarios: Sequence | None = None,
        history_scenarios: Sequence | None = None,
        exclude_seen: bool = False,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Top-``k`` next items [B, k] for full item histories (lists/arrays of indices, oldest first).

        The model reads the last ``max_len`` items; ``exclude_seen`` removes every item of the full history.
        A tensor input is taken as already left-padded [B, T] with 0 = padding.
        Scenario-aware model: ``scenarios`` [B] is the scenario of each request (the one the recommended item
        will happen in) and ``history_scenarios`` the scenario of every history event (B arrays aligned with
        ``sequences``), as names of :attr:`scenarios`; the plain model ignores both.
        """
        if isinstance(sequences, torch.Tensor):
            sequences = [row[row != 0].cpu().numpy() for row in sequences]
        scen = None
        if self.config.scenario_aware:
            scen = self.input_scenarios(scenarios, history_scenarios, [len(s) for s in sequences])
        was_training = self.training
        self.eval()
        device = self.item_emb.weight.device
        L = self.config.max_len
        out = []
        try:
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start : start + batch_size]
                chunk_scen = left_pad(scen[start : start + batch_size], L).to(device) if scen is not None else None
                scores = self.last_scores(left_pad(chunk, L).to(device), chunk_scen)
                seen = left_pad(chunk, max(1, max(len(s) for s in chunk))).to(device) if exclude_seen else None
                out.append(top_k(scores, k, exclude=seen))
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)
