"""Transformer blocks of the generator: attention with KV cache, dense FFN and top-k MoE FFN.

All blocks are pre-LayerNorm residual blocks (x = x + f(LN(x))).

Attention (per head h, d_h = d_model / n_heads), via ``F.scaled_dot_product_attention``:

    Attn(Q, K, V) = softmax(Q K^T / sqrt(d_h) + M) V,   M = 0 where allowed, -inf where masked

Boolean masks use the SDPA convention: True = may attend.

Grouped cross-attention: the decoder may run G rows per encoder row (beams, or candidate items), the
rows of encoder row b being b*G .. b*G+G-1. Their queries are folded into one [B, H, G*T, d_h] query so the
encoder K/V ([B, H, S, d_h], computed once) are never copied G times.

Dense FFN:  FFN(x) = W2 GELU(W1 x + b1) + b2,  hidden = ffn_mult * d_model.

MoE FFN (top-k routing, dropless): router probabilities p = softmax(W_r x) over E experts; the token goes to
the k experts with the largest p, with gates g_e = p_e / sum_{e' in topk} p_e' (zero elsewhere), and

    MoE(x) = sum_{e in topk(x)} g_e(x) FFN_e(x)

Switch-Transformer load-balancing loss (Fedus et al. 2021) over the valid tokens T (``token_mask``):

    f_e = (1 / (k |T|)) sum_{x in T} 1[e in topk(x)]     (share of routed assignments)
    P_e = (1 / |T|)      sum_{x in T} p_e(x)             (mean router probability)
    aux = E * sum_e f_e P_e                                 (= 1 for perfectly uniform routing)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Attention", "FeedForward", "MoEFeedForward", "EncoderBlock", "DecoderBlock", "DecoderCache", "make_ffn"]


class Attention(nn.Module):
    """Multi-head attention with separate query and key/value projections (so K/V can be cached)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.d_head, self.dropout = n_heads, d_model // n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, H, T, d_h]
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self._split(self.q_proj(x))

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv_proj(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q [B', H, T, d_h] with B' = G * B (grouped) against k, v [B, H, S, d_h]; mask broadcastable to [B', 1|H, T, S]
        (or [B, 1, 1, S] when grouped). Returns the projected output [B', T, d]."""
        bq, h, t, dh = q.shape
        b = k.shape[0]
        p = self.dropout if self.training else 0.0
        if t == 1 and mask is None and bq == b and not (self.training and p > 0):
            # incremental decoding: one query per row; elementwise beats thousands of tiny SDPA calls
            att = torch.softmax((q * k).sum(-1) * dh**-0.5, dim=-1)  # [B, H, S]
            o = (att[..., None] * v).sum(2, keepdim=True)  # [B, H, 1, d_h]
            return self.out_proj(o.transpose(1, 2).reshape(bq, 1, h * dh))
        if bq == b:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            if bq % b:
                raise ValueError(f"{bq} query rows are not a multiple of {b} key/value rows")
            g = bq // b
            qg = q.view(b, g, h, t, dh).transpose(1, 2).reshape(b, h, g * t, dh)
            o = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask, dropout_p=p)
            o = o.view(b, h, g, t, dh).transpose(1, 2).reshape(bq, h, t, dh)
        return self.out_proj(o.transpose(1, 2).reshape(bq, t, h * dh))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.drop(self.fc2(F.gelu(self.fc1(x)))), x.new_zeros(())


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of GELU FFN experts with a Switch load-balancing aux loss (see module docstring)."""

    def __init__(self, d_model: int, hidden: int, n_experts: int, top_k: int, dropout: float) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"moe_top_k={top_k} must be in [1, n_experts={n_experts}]")
        self.n_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, d_model))
        self.b2 = nn.Parameter(torch.zeros(n_experts, d_model))
        nn.init.normal_(self.w1, std=0.02)
        nn.init.normal_(self.w2, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.last_gates: torch.Tensor | None = None  # [tokens, E] gates of the last call (for inspection/tests)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        xf = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(xf).float(), dim=-1)  # [T, E]
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # [T, k]
        gates = (top_p / top_p.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(xf)
        for e in range(self.n_experts):  # loop over experts only; tokens are gathered
            tok, slot = (top_i == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            h = F.gelu(xf[tok] @ self.w1[e] + self.b1[e])
            out.index_add_(0, tok, (h @ self.w2[e] + self.b2[e]) * gates[tok, slot, None])
        self.last_gates = torch.zeros_like(probs).scatter(1, top_i, gates.float()).detach()
        # Switch load-balancing loss over valid tokens only (padding must not move it)
        m = torch.ones(xf.shape[0], device=x.device) if token_mask is None else token_mask.reshape(-1).float()
        n = m.sum().clamp(min=1.0)
        assign = F.one_hot(top_i, self.n_experts).sum(1).float()  # [T, E], k ones per row
        f = (assign * m[:, None]).sum(0) / (n * self.top_k)
        p_mean = (probs * m[:, None]).sum(0) / n
        aux = self.n_experts * (f * p_mean).sum()
        return self.drop(out.view(shape)), aux


def make_ffn(kind: str, d_model: int, hidden: int, n_experts: int, top_k: int, dropout: float) -> nn.Module:
    if kind == "dense":
        return FeedForward(d_model, hidden, dropout)
    if kind == "moe":
        return MoEFeedForward(d_model, hidden, n_experts, top_k, dropout)
    raise ValueError(f"ffn must be 'dense' or 'moe', got {kind!r}")


class EncoderBlock(nn.Module):
    """Self-attention (bidirectional unless an ``attn_mask`` is given) + FFN. ``key_mask`` [B, T] True = real token."""

    def __init__(self, d_model: int, n_heads: int, ffn: nn.Module, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout)
        self.ffn = ffn
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``attn_mask`` [B, 1, T, T] (True = query may attend key), e.g. causal; default: every real key."""
        h = self.ln1(x)
        k, v = self.attn.key_value(h)
        mask = key_mask[:, None, None, :] if attn_mask is None else attn_mask
        x = x + self.drop(self.attn.attend(self.attn.query(h), k, v, mask))
        y, aux = self.ffn(self.ln2(x), key_mask)
        return x + y, aux


class DecoderBlock(nn.Module):
    """Causal self-attention (with KV cache) + cross-attention to the encoder memory + FFN."""

    def __init__(self, d_model: int, n_heads: int, ffn: nn.Module, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, n_heads, dropout)
        self.cross_attn = Attention(d_model, n_heads, dropout)
        self.ffn = ffn
        self.drop = nn.Dropout(dropout)

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cross_attn.key_value(memory)

    def forward(
        self,
        x: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        cross_mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """x [B', T_new, d]: the new positions; past: cached self K/V [B', H, T_past, d_h].
        cross_mask [B, 1, 1, S] (True = real memory slot). Returns (x, (K, V) incl. new positions, aux)."""
        h = self.ln1(x)
        q = self.self_attn.query(h)
        k, v = self.self_attn.key_value(h)
        t_past = 0
        if past is not None:
            t_past = past[0].shape[2]
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        t_new = x.shape[1]
        mask = None
        if t_new > 1:  # position t_past+i may see keys 0..t_past+i
            mask = torch.arange(t_past + t_new, device=x.device)[None, :] <= (t_past + torch.arange(t_new, device=x.device))[:, None]
        x = x + self.drop(self.self_attn.attend(q, k, v, mask))
        x = x + self.drop(self.cross_attn.attend(self.cross_attn.query(self.ln2(x)), cross_k, cross_v, cross_mask))
        y, aux = self.ffn(self.ln3(x))
        return x + y, (k, v), aux


class DecoderCache:
    """Incremental-decoding state of :class:`DecoderBlock` stacks.

    ``cross_k/v[i]`` [B, H, S, d_h]: encoder K/V of layer i, computed once per request (B encoder rows);
    ``self_k/v[i]`` [B', H, T, d_h]: self-attention K/V of the T decoder positions processed so far, for the
    B' = G * B decoder rows (row r belongs to encoder row r // G); ``cross_mask`` [B, 1, 1, S];
    ``instruction`` [B, d]: the decoder instruction token.
    """

    def __init__(self, cross_k, cross_v, cross_mask, instruction, self_k=None, self_v=None) -> None:
        self.cross_k: list[torch.Tensor] = cross_k
        self.cross_v: list[torch.Tensor] = cross_v
        self.cross_mask: torch.Tensor = cross_mask
        self.instruction: torch.Tensor = instruction
        self.self_k: list[torch.Tensor] | None = self_k
        self.self_v: list[torch.Tensor] | None = self_v

    @property
    def length(self) -> int:
        """Decoder positions already processed (0 before the first step)."""
        return 0 if self.self_k is None else self.self_k[0].shape[2]

    @property
    def rows(self) -> int | None:
        return None if self.self_k is None else self.self_k[0].shape[0]

    def reorder(self, index: torch.Tensor) -> "DecoderCache":
        """Select/reorder decoder rows (beam search). ``index`` [B''] into the current B' rows; every new row
        must keep its encoder row (new row r must come from a row of encoder row r // G'), which beam search does."""
        if self.self_k is None:
            return self
        return DecoderCache(
            self.cross_k, self.cross_v, self.cross_mask, self.instruction,
            [k.index_select(0, index) for k in self.self_k], [v.index_select(0, index) for v in self.self_v],
        )
