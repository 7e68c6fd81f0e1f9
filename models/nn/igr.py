"""Instruction-Guided Retrieval (IGR) and Query-to-Item (Q2I) alignment (OxygenREC sec. 2.3.3, Eq. 2).

Adapter. Two small MLPs map into a shared k-dim space (k = ``igr_dim``):

    h_q = MLP_q([e_s ; e_r])      e_s = scenario-instruction embedding (Is), e_r = projected reasoning instruction (Ir)
    h_i = MLP_i(e_item)           e_item = sum of the item's per-level code embeddings
    q = h_q / ||h_q||,  z = h_i / ||h_i||                     (cosine space used by IGR and InfoNCE)

Q2I loss over a batch of B (instruction, target item) pairs (q_b, t_b), temperature tau:

    InfoNCE = -(1/B) sum_b log( exp(q_b.t_b / tau) / sum_{j in N(b)} exp(q_b.t_j / tau) )
        N(b) = {b} U {j : target_j != target_b}   (in-batch negatives; other rows with the same target item
                                                   are dropped from the denominator, they are not negatives)

Anti-collapse terms (VICReg-style, on the raw adapter outputs H = h_q or h_i, shape [B, k]; the
InfoNCE is scale-free, these fix scale and spread), with C = cov(H) = (H - mean)^T (H - mean) / (B - 1):

    Var(H)   = (1/k) sum_d max(0, gamma - sqrt(C_dd + eps))          eps = 1e-4
    Decor(H) = (1/k) sum_{d != d'} C_dd'^2

    L_Q2I = InfoNCE + w_var * (Var(H_q) + Var(H_t)) + w_decor * (Decor(H_q) + Decor(H_t))

Both terms are 0 for a batch of fewer than 2 rows.

IGR. For a user's long history (M items, ``mask`` True = real) the relevance of item m is the cosine
s_m = q . z_m (-inf for padding); the top-K by s (``torch.topk``) are kept, at train and inference time.
When fewer than K items are real, the extra picks are padding and come back with ``selected_mask`` False.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "IGRAdapter",
    "info_nce",
    "variance_loss",
    "decorrelation_loss",
    "q2i_loss",
    "igr_select",
]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class IGRAdapter(nn.Module):
    """Projects (scenario, reasoning) instructions and items into a shared space. Returns *raw* outputs;
    L2-normalise for cosine scores (``F.normalize``)."""

    def __init__(self, d_model: int, dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.query_mlp = _mlp(2 * d_model, hidden, dim)
        self.item_mlp = _mlp(d_model, hidden, dim)

    def query(self, scenario_emb: torch.Tensor, reasoning_emb: torch.Tensor) -> torch.Tensor:
        return self.query_mlp(torch.cat([scenario_emb, reasoning_emb], dim=-1))

    def item(self, item_emb: torch.Tensor) -> torch.Tensor:
        return self.item_mlp(item_emb)


def info_nce(q: torch.Tensor, t: torch.Tensor, temperature: float, same_target: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch InfoNCE between L2-normalised q [B, k] and t [B, k]; ``same_target`` [B, B] bool marks pairs
    (b, j) with the same target item, removed from the denominator except j = b."""
    if q.shape != t.shape or q.dim() != 2:
        raise ValueError(f"info_nce needs q and t of the same [B, k] shape, got {tuple(q.shape)} and {tuple(t.shape)}")
    logits = q @ t.T / temperature
    if same_target is not None:
        off_diag = same_target & ~torch.eye(q.shape[0], dtype=torch.bool, device=q.device)
        logits = logits.masked_fill(off_diag, float("-inf"))
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


def variance_loss(h: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance hinge: mean_d relu(gamma - sqrt(var_d + eps)) over the batch (unbiased var)."""
    if h.shape[0] < 2:
        return h.new_zeros(())
    std = torch.sqrt(h.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def decorrelation_loss(h: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariance entries divided by the dimension."""
    n, k = h.shape
    if n < 2:
        return h.new_zeros(())
    hc = h - h.mean(dim=0)
    cov = hc.T @ hc / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / k


def q2i_loss(
    h_q: torch.Tensor,
    h_t: torch.Tensor,
    temperature: float = 0.07,
    var_weight: float = 1.0,
    decor_weight: float = 1.0,
    var_gamma: float = 1.0,
    same_target: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Q2I loss on raw adapter outputs (see module docstring). Returns total, nce, var, decor."""
    nce = info_nce(F.normalize(h_q, dim=-1), F.normalize(h_t, dim=-1), temperature, same_target)
    var = variance_loss(h_q, var_gamma) + variance_loss(h_t, var_gamma)
    decor = decorrelation_loss(h_q) + decorrelation_loss(h_t)
    return {"total": nce + var_weight * var + decor_weight * decor, "nce": nce, "var": var, "decor": decor}


def igr_select(
    q: torch.Tensor, items: torch.Tensor, mask: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-K long-history items by cosine to the instruction query.

    q [B, k] and items [B, M, k] L2-normalised; mask [B, M] True = real item. Returns
    (index Long[B, K'], selected_mask Bool[B, K'], scores Float[B, K']) with K' = min(top_k, M), sorted by score.
    """
    if items.dim() != 3 or mask.shape != items.shape[:2] or q.shape[0] != items.shape[0]:
        raise ValueError(f"igr_select shapes: q {tuple(q.shape)}, items {tuple(items.shape)}, mask {tuple(mask.shape)}")
    scores = torch.einsum("bk,bmk->bm", q, items)
    # padding ranks below every cosine, earliest slot first: a distinct order, so every runtime (torch, ONNX)
    # fills the K' slots with the same padding entries when a user has fewer than K real items
    pos = torch.arange(items.shape[1], device=items.device, dtype=scores.dtype)
    scores = torch.where(mask, scores, -2.0 - pos / items.shape[1])
    k = min(top_k, items.shape[1])
    top_s, idx = scores.topk(k, dim=-1)
    selected = mask.gather(1, idx)
    return idx, selected, top_s.masked_fill(~selected, float("-inf"))
