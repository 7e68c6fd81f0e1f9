"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Items are encoded ``1..n_items``; 0 is padding. Sequences are **left**-padded to ``T <= max_len`` and the
positional embedding is right-aligned (the last item always gets position ``max_len - 1``), as in the
original, so adding more left padding changes nothing.

    x_0 = Dropout(E[s_t] * sqrt(d) + P[max_len - T + t])          E: item table (row 0 = 0), P: positions
    for each of n_blocks (pre-LayerNorm):
        x = x + Dropout(CausalSelfAttention(LN(x)))                query t attends to keys j <= t that are items
        x = x + Dropout(W2 Dropout(ReLU(W1 LN(x))))               point-wise feed-forward, width d
    h = LN(x)                                                     [B, T, d]
    score(t, i) = h_t . E[i]                                      tied input/output item embeddings

Training: full-softmax cross-entropy over all items at every non-padding position (target = next item),
``loss = mean_{t: y_t != 0} -log softmax(score(t, .))[y_t]`` with the padding item's logit at ``-inf``.
Ranking: the scores of the last position; ``recommend(..., exclude_seen=True)`` also drops the history.

A padding query position (all its keys are padding) attends to itself only, so no row of the attention
is empty (no NaN); padding positions never act as keys for real items.
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

__all__ = ["SASRec", "SASRecConfig", "left_pad"]


@dataclass(frozen=True)
class SASRecConfig:
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.98)  # the original implementation's beta2
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 20  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
    # training windows: the last max_len + 1 items of every prefix s[:n], s[:n - stride], ... of a user's train
    # sequence; None = only the last window (the original sampler). Overlapping windows give every target a
    # long left context. On MovieLens-100K (3 seeds, bench/results/sasrec_movielens.json) stride 10 gives
    # test HR@10 .122 +- .014 (reference .1386 +- .0049), seen excluded .198 +- .021 (reference .2124);
    # the last window alone landed ~0.03 HR@10 lower still.
    window_stride: int | None = 10

    def __post_init__(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        for name in ("hidden", "n_blocks", "n_heads", "max_len", "batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(f"SASRecConfig.window_stride must be >= 1 or None, got {self.window_stride}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")


def left_pad(sequences: Sequence, max_len: int) -> torch.Tensor:
    """Keep the last ``max_len`` items of each sequence, left-pad with 0 -> LongTensor [B, max_len]."""
    out = torch.zeros(len(sequences), max_len, dtype=torch.long)
    for b, seq in enumerate(sequences):  # loop over sequences (not items); each copy is one slice
        tail = torch.as_tensor(np.asarray(seq, dtype=np.int64)[-max_len:])
        if tail.numel():
            out[b, max_len - tail.numel() :] = tail
    return out


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
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
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
    def __init__(self, n_items: int, config: SASRecConfig = SASRecConfig()) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.config = config
        self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(config.hidden)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Xavier-normal for all matrices, as the original implementation (TF: xavier; PyTorch port: xavier_normal_)
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.xavier_normal_(m.weight)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Left-padded item indices [B, T] (T <= max_len) -> hidden states [B, T, hidden]."""
        if seqs.ndim != 2:
            raise ValueError(f"seqs must be [B, T], got shape {tuple(seqs.shape)}")
        B, T = seqs.shape
        L = self.config.max_len
        if T > L:
            raise ValueError(f"sequence length {T} exceeds max_len={L}")
        pos = torch.arange(L - T, L, device=seqs.device)  # right-aligned positions
        x = self.item_emb(seqs) * math.sqrt(self.config.hidden) + self.pos_emb(pos)
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

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-item cross-entropy over positions whose target is not padding (0)."""
        return self.loss_from_hidden(self(inputs), targets)

    def loss_from_hidden(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy from hidden states [B, T, d]; logits only at positions with a target (saves the
        [B, T, n_items] product for padding, which is most of it in evaluation batches)."""
        keep = targets != 0
        if not keep.any():
            raise ValueError("targets are all padding (0): no position to compute a loss on")
        return F.cross_entropy(self.item_logits(hidden[keep]), targets[keep])

    def last_scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores of the next item after each (left-padded) sequence: [B, n_items + 1]."""
        return self.item_logits(self(seqs)[:, -1])

    @torch.no_grad()
    def recommend(
        self,
        sequences: Sequence | torch.Tensor,
        k: int,
        *,
        exclude_seen: bool = False,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Top-``k`` next items [B, k] for full item histories (lists/arrays of indices, oldest first).

        The model reads the last ``max_len`` items; ``exclude_seen`` removes every item of the full history.
        A tensor input is taken as already left-padded [B, T] with 0 = padding.
        """
        if isinstance(sequences, torch.Tensor):
            sequences = [row[row != 0].cpu().numpy() for row in sequences]
        was_training = self.training
        self.eval()
        device = self.item_emb.weight.device
        out = []
        try:
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start : start + batch_size]
                scores = self.last_scores(left_pad(chunk, self.config.max_len).to(device))
                seen = left_pad(chunk, max(1, max(len(s) for s in chunk))).to(device) if exclude_seen else None
                out.append(top_k(scores, k, exclude=seen))
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)
