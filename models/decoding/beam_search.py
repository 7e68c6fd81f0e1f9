"""Trie-constrained beam search over semantic IDs, and brute-force scoring of a whole catalog.

Beam search (B users, beam width W, levels d = 0..L):

    s_0 = 0 for the single root beam
    for each level d:
        lp[b, k, v] = log_softmax(decoder(prefix_{b,k}))[v]         one batched decode_step over B x k rows
        cand[b, k, v] = s[b, k] + lp[b, k, v]  if trie allows v after prefix_{b,k}  else -inf
        (s', flat) = topk_{(k, v)} cand[b]  (W' = min(W, k x V_d) per user)
        beam = flat // V_d, token = flat % V_d; KV cache rows, prefixes and trie nodes follow `beam`
    item = trie leaf of each final beam, score = sum_d log p(c_d | c_<d, user)   (the model's sequence log-prob)

Scores are the unrenormalised model log-probs, so they equal ``score_all_items`` of the same items. Beams whose
score is -inf (fewer than W valid prefixes at some level) carry node -1 and are returned as item -1, score -inf
(only when the catalog has fewer than ``top_k`` items reachable). Distinct beams are distinct prefixes, so no
item is returned twice. Only the L+1 levels are looped over in Python.

``exclude_items`` (Long[B, E] catalog rows, -1 = padding; e.g. the items a user already has): at the last level
every candidate leaf whose item is excluded for that user gets -inf before the top-k, so the beam keeps searching
and returns the best non-excluded items (the same rule as dropping seen items from a full-catalog ranking).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.semantic_ids.trie import SIDTrie

__all__ = ["constrained_beam_search", "score_all_items"]


def _check(model, trie: SIDTrie) -> None:
    if tuple(trie.vocab_sizes) != tuple(model.cfg.vocab_sizes):
        raise ValueError(f"trie vocab_sizes {trie.vocab_sizes} != model vocab_sizes {model.cfg.vocab_sizes}")


class _EvalMode:
    """Run the model in eval mode without grad, restoring its training flag afterwards."""

    def __init__(self, model) -> None:
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def constrained_beam_search(
    model, batch: dict, trie: SIDTrie, beam_width: int, top_k: int | None = None,
    exclude_items: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k catalog items per user: (item_index Long[B, top_k], log_prob Float[B, top_k]), best first.

    Unfilled slots (catalog smaller than top_k) are item -1 with score -inf. ``exclude_items`` (Long[B, E],
    -1 padded): catalog rows never returned for that user (see the module docstring)."""
    top_k = beam_width if top_k is None else top_k
    if beam_width < 1 or top_k < 1:
        raise ValueError(f"beam_width and top_k must be >= 1, got {beam_width} and {top_k}")
    if top_k > beam_width:
        raise ValueError(f"top_k={top_k} cannot exceed beam_width={beam_width}")
    _check(model, trie)
    n_levels = model.cfg.n_levels
    with _EvalMode(model):
        memory, memory_mask = model.encode(batch)
        b, dev = memory.shape[0], memory.device
        cache = model.init_cache(memory, memory_mask)
        scores = torch.zeros(b, 1, device=dev)
        nodes = trie.root_nodes(b)
        prefix = torch.zeros(b, 0, dtype=torch.long, device=dev)
        rows = torch.arange(b, device=dev)[:, None]
        bias_inputs = model.history_for_bias(batch) if getattr(model, "repeat_bias", None) is not None else None
        for d in range(n_levels):
            k_cur, v = scores.shape[1], trie.depth_vocab(d)
            logits, cache = model.decode_step(memory, memory_mask, prefix, cache)  # [B * k_cur, V_d]
            if bias_inputs is not None:  # learned repeat bias (GeneratorConfig.history_bias)
                scen, hist, hmask = bias_inputs
                logits = logits + model.repeat_logit_bias(scen.repeat_interleave(k_cur), hist.repeat_interleave(k_cur, 0),
                                                          hmask.repeat_interleave(k_cur, 0), prefix)
            lp = F.log_softmax(logits.float(), dim=-1)
            allowed = trie.allowed_mask(nodes.cpu(), d).to(dev)
            cand = (scores.reshape(-1, 1) + lp).masked_fill(~allowed, float("-inf"))
            if exclude_items is not None and d == n_levels - 1:
                cand = cand.masked_fill(_excluded_leaves(trie, nodes, d, v, exclude_items, k_cur).to(dev), float("-inf"))
            cand = cand.view(b, k_cur * v)
            scores, flat = cand.topk(min(beam_width, k_cur * v), dim=1)
            src = (rows * k_cur + flat // v).reshape(-1)  # parent row of each new beam
            token = (flat % v).reshape(-1)
            nodes = trie.advance(nodes[src.cpu()], token.cpu(), d)
            nodes = torch.where(scores.reshape(-1).cpu() > float("-inf"), nodes, -1)
            prefix = torch.cat([prefix[src], token[:, None]], dim=1)
            if d + 1 < n_levels:
                cache = cache.reorder(src)
        items = trie.leaf_item(nodes).to(dev).view(b, -1)
        valid = (items >= 0) & (scores > float("-inf"))
        items = torch.where(valid, items, -1)
        scores = torch.where(valid, scores, float("-inf"))
        if items.shape[1] < top_k:  # tiny vocabularies: fewer candidates than requested
            pad = top_k - items.shape[1]
            items = torch.cat([items, items.new_full((b, pad), -1)], 1)
            scores = torch.cat([scores, scores.new_full((b, pad), float("-inf"))], 1)
        return items[:, :top_k], scores[:, :top_k]


def _excluded_leaves(trie: SIDTrie, nodes: torch.Tensor, depth: int, v: int, exclude_items: torch.Tensor,
                     k_cur: int) -> torch.Tensor:
    """Bool[B * k_cur, v]: the last-level candidate (beam row, token) completes an item excluded for its user."""
    rows = nodes.shape[0]
    child = trie.advance(nodes.cpu().repeat_interleave(v), torch.arange(v).repeat(rows), depth)
    leaf = trie.leaf_item(child).view(rows, v)  # -1 where not an item
    excl = torch.as_tensor(exclude_items).long().cpu()
    if excl.dim() != 2 or excl.shape[0] * k_cur != rows:
        raise ValueError(f"exclude_items must be [B, E] with one row per user ({rows // k_cur}), got {tuple(excl.shape)}")
    n = trie.num_items
    user = torch.arange(rows) // k_cur  # beam row -> user
    banned = (torch.arange(excl.shape[0])[:, None] * n + excl)[excl >= 0]  # user * N + item, one membership test
    hit = torch.isin(user[:, None] * n + leaf, banned)
    return hit & (leaf >= 0)


def score_all_items(model, batch: dict, codes, max_rows: int = 65536) -> torch.Tensor:
    """Float[B, N]: teacher-forced log p(item) = sum_l log p(c_l | c_<l, user) for every catalog row of
    ``codes`` (N, L+1). Chunks the catalog so that at most ``max_rows`` decoder rows run at once."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    if codes.dim() != 2 or codes.shape[1] != model.cfg.n_levels:
        raise ValueError(f"codes must be (N, {model.cfg.n_levels}), got shape {tuple(codes.shape)}")
    with _EvalMode(model):
        memory, memory_mask = model.encode(batch)
        b, dev = memory.shape[0], memory.device
        codes = codes.to(dev)
        chunk = max(1, max_rows // b)
        out = []
        for start in range(0, codes.shape[0], chunk):  # loop over catalog chunks, not items
            c = codes[start : start + chunk]
            sids = c.repeat(b, 1)  # row b * n + i = (user b, item i)
            logits, _ = model.decoder_logits(memory, memory_mask, sids)
            lp = sum(F.log_softmax(lg.float(), -1).gather(1, sids[:, l : l + 1])[:, 0] for l, lg in enumerate(logits))
            out.append(lp.view(b, -1))
        return torch.cat(out, dim=1)
