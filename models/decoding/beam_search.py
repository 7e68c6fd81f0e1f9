"""Trie-constrained beam search over semantic IDs, and brute-force scoring of a whole catalog.

Beam search (B users, beam width W, levels d = 0..L):

    s_0 = 0 for the single root beam
    for each level d:
        lp[b, k, v] = log_softmax(decoder(prefix_{b,k}))[v]         one batched decode_step over B x k rows
        cand[b, k, v] = s[b, k] + lp[b, k, v]  if trie allows v after prefix_{b,k}  else -inf
        (s', flat) = topk_{(k, v)} cand[b]  (W' = min(W, k x V_d) per user)
        beam = flat // V_d, token = flat % V_d; KV cache rows, prefixes and trie nodes follow `beam`
    item = trie leaf of each final beam, score = sum_d log p(c_d | c_<d, user)   (the model's sequence log-prob)

The loop itself is :meth:`models.semantic_ids.trie.SIDTrie.beam_search`, shared with the served ONNX runtime.
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

    The search is :meth:`SIDTrie.beam_search` (the one the served ONNX graphs use too); this function only
    supplies the generator's next-level logits (with the learned repeat bias when ``history_bias`` is on).
    Unfilled slots (catalog smaller than top_k) are item -1 with score -inf. ``exclude_items`` (Long[B, E],
    -1 padded): catalog rows never returned for that user (see the module docstring)."""
    _check(model, trie)
    with _EvalMode(model):
        memory, memory_mask = model.encode(batch)
        b, dev = memory.shape[0], memory.device
        state = {"cache": model.init_cache(memory, memory_mask),
                 "prefix": torch.zeros(b, 0, dtype=torch.long, device=dev)}
        bias_inputs = model.history_for_bias(batch) if getattr(model, "repeat_bias", None) is not None else None

        def next_logits(d: int, token: torch.Tensor | None, parent: torch.Tensor | None) -> torch.Tensor:
            if d > 0:  # the KV cache and the prefixes follow the chosen beams
                k_prev = state["prefix"].shape[0] // b
                src = (torch.arange(b, device=dev)[:, None] * k_prev + parent).reshape(-1)
                state["cache"] = state["cache"].reorder(src)
                state["prefix"] = torch.cat([state["prefix"][src], token.reshape(-1, 1)], dim=1)
            logits, state["cache"] = model.decode_step(memory, memory_mask, state["prefix"], state["cache"])
            if bias_inputs is not None:  # learned repeat bias (GeneratorConfig.history_bias)
                scen, hist, hmask = bias_inputs
                k_cur = state["prefix"].shape[0] // b
                logits = logits + model.repeat_logit_bias(scen.repeat_interleave(k_cur), hist.repeat_interleave(k_cur, 0),
                                                          hmask.repeat_interleave(k_cur, 0), state["prefix"])
            return logits

        return trie.beam_search(next_logits, b, beam_width, top_k, exclude_items=exclude_items)


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
