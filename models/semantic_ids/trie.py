"""Prefix trie of valid semantic-ID tuples, in tensor form for vectorised constrained decoding.

A catalog is ``codes: (N, L+1)`` int64, row i = item i, column d in ``[0, vocab_sizes[d])``. The trie has
one node per distinct prefix; depth d holds the distinct prefixes of length d (depth 0 = the root, depth
L+1 = the leaves, one per item). Nodes of a depth are numbered in lexicographic order of their prefixes,
so the children of node p at depth d are a contiguous, token-sorted run of the nodes at depth d+1:

    offsets_d[p] .. offsets_d[p+1]-1   = ids of p's children (at depth d+1)
    tokens_d[j]                        = last code of child j  (the edge label p -> j)
    key_d[j] = parent_d[j] * V_d + tokens_d[j]     strictly increasing in j (CSR form)

Query-time operations (no Python loop over the batch, vocabulary or items):

* ``advance(nodes, tokens, d)``: child id, or -1 for an invalid transition (also for node -1 and for
  tokens outside ``[0, V_d)``). Dense form: ``child_d[p, t]`` (int32 table ``n_nodes_d x V_d``, -1 = none).
  CSR form: ``j = searchsorted(key_d, p * V_d + t)``, valid iff ``key_d[j] == p * V_d + t``.
* ``allowed_mask(nodes, d)``: ``mask[b, t] = advance(nodes[b], t, d) >= 0``. Dense: ``child_d[nodes] >= 0``.
  CSR: the children runs of the batch are concatenated with ``repeat_interleave`` and scattered into a
  ``[B, V_d]`` boolean mask.
* ``leaf_item(nodes)``: the catalog row of a leaf (depth L+1) node, -1 for node -1.

Depth d uses the dense table iff ``n_nodes_d * V_d <= TrieConfig.dense_max_entries`` (``mode="auto"``), so a
1M-item 3x256 catalog stays small (the 65k x 256 depth-2 table would be 67 MB dense; its CSR is 4 MB).
``to_arrays``/``from_arrays`` give a flat numpy dict (offsets, tokens, leaf items) for ``np.savez``.

``beam_search(next_logits, ...)`` is the one trie-constrained beam search of the project (B users, width W):

    s = 0 for one root beam per user
    for level d = 0..L:
        logits = next_logits(d, token, parent)         [B * k, >= V_d]; d > 0: the backend first moves its state
                                                       (KV cache, prefixes) to the chosen beams
        cand[b, k, v] = s[b, k] + log_softmax(logits[:, :V_d])[v]  if the trie allows v after beam (b, k)  else -inf
        (s, flat) = topk over (k, v) of cand[b]   (W' = min(W, k * V_d));  parent = flat // V_d, token = flat % V_d
    item = trie leaf of each beam; score = sum_d log p(c_d | c_<d, user)

The PyTorch generator (models/decoding/beam_search.py) and the exported ONNX graphs served by Triton
(triton_repo/templates/common/oxygenrec_runtime.py, which ships this file as ``sid_trie.py``) only differ in
``next_logits``, so what is evaluated is what is served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = ["TrieConfig", "SIDTrie"]

Mode = Literal["auto", "dense", "csr"]


@dataclass(frozen=True)
class TrieConfig:
    """``mode``: "auto" picks dense per depth when ``n_nodes * vocab <= dense_max_entries``; "dense"/"csr" force one form."""

    dense_max_entries: int = 1 << 22  # 4M int32 entries = 16 MB per depth
    mode: Mode = "auto"

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "dense", "csr"):
            raise ValueError(f"TrieConfig.mode must be 'auto', 'dense' or 'csr', got {self.mode!r}")
        if self.dense_max_entries < 0:
            raise ValueError(f"TrieConfig.dense_max_entries must be >= 0, got {self.dense_max_entries}")


def _as_codes(codes, vocab_sizes) -> tuple[np.ndarray, tuple[int, ...]]:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    vocab_sizes = tuple(int(v) for v in vocab_sizes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D (N, L+1) array, got shape {codes.shape}")
    if codes.shape[1] != len(vocab_sizes):
        raise ValueError(f"codes has {codes.shape[1]} columns but vocab_sizes has {len(vocab_sizes)} levels")
    if codes.shape[0] == 0:
        raise ValueError("codes is empty: a trie needs at least one item")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    if any(v <= 0 for v in vocab_sizes):
        raise ValueError(f"vocab_sizes must be positive, got {vocab_sizes}")
    codes = codes.astype(np.int64, copy=False)
    for d, v in enumerate(vocab_sizes):
        col = codes[:, d]
        if col.min() < 0 or col.max() >= v:
            bad = int(np.flatnonzero((col < 0) | (col >= v))[0])
            raise ValueError(f"codes[{bad}, {d}] = {int(col[bad])} is outside [0, {v}) (vocab_sizes[{d}])")
    return codes, vocab_sizes


class SIDTrie:
    """Trie over semantic-ID tuples. Build with :meth:`from_codes` or :meth:`from_arrays`."""

    def __init__(
        self,
        vocab_sizes: tuple[int, ...],
        offsets: list[torch.Tensor],
        tokens: list[torch.Tensor],
        leaf_items: torch.Tensor,
        config: TrieConfig = TrieConfig(),
    ) -> None:
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        self.config = config
        self.n_levels = len(self.vocab_sizes)  # L+1 = number of codes per item
        self.offsets = [o.long() for o in offsets]  # per depth 0..L: (n_nodes_d + 1,)
        self.tokens = [t.long() for t in tokens]  # per depth 0..L: (n_nodes_{d+1},)
        self.leaf_items = leaf_items.long()
        self._dense: list[torch.Tensor | None] = []
        self._has_child: list[torch.Tensor | None] = []  # dense form: bool copy of child >= 0 (1 byte gathers)
        self._keys: list[torch.Tensor | None] = []
        for d in range(self.n_levels):
            n_nodes, v = self.num_nodes(d), self.vocab_sizes[d]
            n_child = self.tokens[d].numel()
            parent = torch.repeat_interleave(torch.arange(n_nodes), self.offsets[d].diff())
            use_dense = config.mode == "dense" or (config.mode == "auto" and n_nodes * v <= config.dense_max_entries)
            if use_dense:
                table = torch.full((n_nodes, v), -1, dtype=torch.int32)
                table[parent, self.tokens[d]] = torch.arange(n_child, dtype=torch.int32)
                self._dense.append(table)
                self._has_child.append(table >= 0)
                self._keys.append(None)
            else:
                self._dense.append(None)
                self._has_child.append(None)
                self._keys.append(parent * v + self.tokens[d])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_codes(cls, codes, vocab_sizes, config: TrieConfig = TrieConfig()) -> "SIDTrie":
        """Build from ``codes (N, L+1)``; raises ValueError on out-of-range codes or duplicate tuples."""
        codes, vocab_sizes = _as_codes(codes, vocab_sizes)
        n, n_levels = codes.shape
        order = np.lexsort(codes.T[::-1])  # lexicographic by column 0, then 1, ...
        s = codes[order]
        # differs[r, c]: row r differs from row r-1 in column c; a new depth-d node starts where any of the first d differ
        differs = np.ones((n, n_levels), dtype=bool)
        differs[1:] = s[1:] != s[:-1]
        new_node = np.logical_or.accumulate(differs, axis=1)  # new_node[r, d-1]: new prefix of length d at row r
        if not new_node[:, -1].all():
            dup = order[np.flatnonzero(~new_node[:, -1])[0]]
            raise ValueError(
                f"codes has duplicate semantic-ID tuples (e.g. item {int(dup)}: {codes[dup].tolist()}); "
                "the disambiguation level must make every tuple unique"
            )
        offsets, tokens = [], []
        parent_of_row = np.zeros(n, dtype=np.int64)  # node id at depth d of each sorted row (root: 0)
        for d in range(n_levels):
            starts = np.flatnonzero(new_node[:, d])  # first sorted row of every depth-(d+1) node
            parent = parent_of_row[starts]
            n_parents = 1 if d == 0 else int(parent_of_row.max()) + 1
            counts = np.bincount(parent, minlength=n_parents)
            offsets.append(torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)))
            tokens.append(torch.from_numpy(s[starts, d].copy()))
            parent_of_row = np.cumsum(new_node[:, d]) - 1
        leaf_items = torch.from_numpy(order.astype(np.int64))  # leaf j = j-th sorted row
        return cls(vocab_sizes, offsets, tokens, leaf_items, config)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy dict for ``np.savez``: vocab_sizes, offsets_d, tokens_d, leaf_items."""
        out = {"vocab_sizes": np.asarray(self.vocab_sizes, dtype=np.int64), "leaf_items": self.leaf_items.numpy()}
        for d in range(self.n_levels):
            out[f"offsets_{d}"] = self.offsets[d].numpy()
            out[f"tokens_{d}"] = self.tokens[d].numpy()
        return out

    @classmethod
    def from_arrays(cls, arrays, config: TrieConfig = TrieConfig()) -> "SIDTrie":
        """Inverse of :meth:`to_arrays` (accepts a dict or an ``np.load`` NpzFile)."""
        if "vocab_sizes" not in arrays or "leaf_items" not in arrays:
            raise ValueError("trie arrays need 'vocab_sizes' and 'leaf_items'")
        vocab_sizes = tuple(int(v) for v in np.asarray(arrays["vocab_sizes"]))
        offsets, tokens = [], []
        n_nodes = 1
        for d in range(len(vocab_sizes)):
            for key in (f"offsets_{d}", f"tokens_{d}"):
                if key not in arrays:
                    raise ValueError(f"trie arrays are missing {key!r}")
            o = torch.from_numpy(np.asarray(arrays[f"offsets_{d}"], dtype=np.int64).copy())
            t = torch.from_numpy(np.asarray(arrays[f"tokens_{d}"], dtype=np.int64).copy())
            if o.numel() != n_nodes + 1 or int(o[-1]) != t.numel() or int(o[0]) != 0:
                raise ValueError(f"trie arrays: offsets_{d} (len {o.numel()}) inconsistent with {n_nodes} nodes / {t.numel()} tokens")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_sizes[d]):
                raise ValueError(f"trie arrays: tokens_{d} outside [0, {vocab_sizes[d]})")
            offsets.append(o)
            tokens.append(t)
            n_nodes = t.numel()
        leaf = torch.from_numpy(np.asarray(arrays["leaf_items"], dtype=np.int64).copy())
        if leaf.numel() != n_nodes:
            raise ValueError(f"trie arrays: leaf_items has {leaf.numel()} entries, expected {n_nodes}")
        return cls(vocab_sizes, offsets, tokens, leaf, config)

    # ------------------------------------------------------------------ structure
    @property
    def root(self) -> int:
        return 0

    @property
    def num_items(self) -> int:
        return self.leaf_items.numel()

    def num_nodes(self, depth: int) -> int:
        """Number of distinct prefixes of length ``depth`` (depth 0: 1 root; depth L+1: items)."""
        if depth == 0:
            return 1
        return self.tokens[depth - 1].numel()

    def depth_vocab(self, depth: int) -> int:
        """Vocabulary of the code chosen at ``depth`` (the edge from depth to depth+1)."""
        self._check_depth(depth)
        return self.vocab_sizes[depth]

    def is_dense(self, depth: int) -> bool:
        self._check_depth(depth)
        return self._dense[depth] is not None

    def root_nodes(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, dtype=torch.long)

    def _check_depth(self, depth: int) -> None:
        if not 0 <= depth < self.n_levels:
            raise ValueError(f"depth must be in [0, {self.n_levels}), got {depth}")

    # ------------------------------------------------------------------ queries
    def allowed_mask(self, nodes: torch.Tensor, depth: int) -> torch.Tensor:
        """``Bool[B, V_depth]``: tokens that extend each (depth-``depth``) node to a valid prefix; all False for -1."""
        self._check_depth(depth)
        nodes = nodes.long()
        valid = nodes >= 0
        safe = torch.where(valid, nodes, 0)
        has_child = self._has_child[depth]
        if has_child is not None:
            mask = has_child[safe]
            mask &= valid[:, None]
            return mask
        v = self.vocab_sizes[depth]
        start = self.offsets[depth][safe]
        count = torch.where(valid, self.offsets[depth][safe + 1] - start, 0)
        total = int(count.sum())
        mask = torch.zeros(nodes.numel(), v, dtype=torch.bool)
        if total == 0:
            return mask
        row = torch.repeat_interleave(torch.arange(nodes.numel()), count, output_size=total)
        # global child index = start of the row's run + rank within the run
        first = torch.cumsum(count, 0) - count
        pos = torch.arange(total) + torch.repeat_interleave(start - first, count, output_size=total)
        mask[row, self.tokens[depth][pos]] = True
        return mask

    def advance(self, nodes: torch.Tensor, tokens: torch.Tensor, depth: int) -> torch.Tensor:
        """Child node ids at depth+1 (``Long[B]``), -1 where ``tokens`` is not a valid edge (or the node is -1)."""
        self._check_depth(depth)
        nodes, tokens = nodes.long(), tokens.long()
        v = self.vocab_sizes[depth]
        valid = (nodes >= 0) & (tokens >= 0) & (tokens < v)
        safe_n = torch.where(valid, nodes, 0)
        safe_t = torch.where(valid, tokens, 0)
        table = self._dense[depth]
        if table is not None:
            child = table[safe_n, safe_t].long()
        else:
            keys = self._keys[depth]
            q = safe_n * v + safe_t
            j = torch.searchsorted(keys, q).clamp(max=keys.numel() - 1)
            child = torch.where(keys[j] == q, j, -1)
        return torch.where(valid, child, -1)

    def leaf_item(self, nodes: torch.Tensor) -> torch.Tensor:
        """Catalog row of each leaf node (depth L+1), -1 for node -1."""
        nodes = nodes.long()
        valid = nodes >= 0
        return torch.where(valid, self.leaf_items[torch.where(valid, nodes, 0)], -1)

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Node ids reached by ``prefixes (B, d)`` from the root (-1 if invalid). Loops over the d levels only."""
        if prefixes.dim() != 2 or prefixes.shape[1] > self.n_levels:
            raise ValueError(f"prefixes must be (B, d) with d <= {self.n_levels}, got shape {tuple(prefixes.shape)}")
        nodes = self.root_nodes(prefixes.shape[0])
        for d in range(prefixes.shape[1]):
            nodes = self.advance(nodes, prefixes[:, d], d)
        return nodes

    def is_valid_prefix(self, prefixes: torch.Tensor) -> torch.Tensor:
        """``Bool[B]``: each row of ``prefixes (B, d)`` is a prefix of some item's codes."""
        return self.walk(prefixes) >= 0

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item index of each full code tuple ``(B, L+1)``, -1 if it is not in the catalog."""
        if codes.dim() != 2 or codes.shape[1] != self.n_levels:
            raise ValueError(f"codes must be (B, {self.n_levels}), got shape {tuple(codes.shape)}")
        return self.leaf_item(self.walk(codes))

    @torch.no_grad()
    def beam_search(self, next_logits: Callable[[int, torch.Tensor | None, torch.Tensor | None], torch.Tensor],
                    batch_size: int, beam_width: int, top_k: int | None = None,
                    exclude_items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k catalog items per user (module docstring): (item_index Long[B, top_k], log_prob Float[B, top_k]),
        best first; slots no valid item reaches (catalog smaller than top_k) are item -1 with score -inf.

        ``next_logits(d, token, parent)``: the logits [B * k, >= V_d] of level d for the current beams, row
        b * k + j = beam j of user b; ``token`` Long[B, k] is the code each beam chose at level d - 1 and
        ``parent`` Long[B, k] the index (among the previous level's beams of the same user) it extends (both None
        at d = 0). Distinct beams are distinct prefixes, so no item is returned twice. ``exclude_items``
        (Long[B, E] catalog rows, -1 = padding; e.g. the items a user already has): at the last level every
        candidate leaf whose item is excluded for that user gets -inf before the top-k, so the search returns the
        best items that are not excluded."""
        top_k = beam_width if top_k is None else top_k
        if beam_width < 1 or top_k < 1:
            raise ValueError(f"beam_width and top_k must be >= 1, got {beam_width} and {top_k}")
        if top_k > beam_width:
            raise ValueError(f"top_k={top_k} cannot exceed beam_width={beam_width}")
        b = batch_size
        scores, nodes, rows = None, self.root_nodes(b), torch.arange(b)[:, None]
        token = parent = None
        for d in range(self.n_levels):
            logits = next_logits(d, token, parent)
            v = self.depth_vocab(d)
            if scores is None:
                scores = torch.zeros(b, 1, device=logits.device)
            k_cur = scores.shape[1]
            lp = torch.log_softmax(logits[..., :v].float(), dim=-1).reshape(b * k_cur, v)
            allowed = self.allowed_mask(nodes, d).to(lp.device)
            cand = (scores.reshape(-1, 1) + lp).masked_fill(~allowed, float("-inf"))
            if exclude_items is not None and d == self.n_levels - 1:
                cand = cand.masked_fill(self.excluded_leaves(nodes, d, exclude_items, k_cur).to(lp.device),
                                        float("-inf"))
            cand = cand.view(b, k_cur * v)
            scores, flat = cand.topk(min(beam_width, k_cur * v), dim=1)
            parent, token = flat // v, flat % v
            src = (rows * k_cur + parent.cpu()).reshape(-1)
            nodes = self.advance(nodes[src], token.reshape(-1).cpu(), d)
            nodes = torch.where(scores.reshape(-1).cpu() > float("-inf"), nodes, -1)
        items = self.leaf_item(nodes).view(b, -1).to(scores.device)
        valid = (items >= 0) & (scores > float("-inf"))
        items = torch.where(valid, items, -1)
        scores = torch.where(valid, scores, float("-inf"))
        if items.shape[1] < top_k:  # tiny catalogs: fewer candidates than requested
            pad = top_k - items.shape[1]
            items = torch.cat([items, items.new_full((b, pad), -1)], 1)
            scores = torch.cat([scores, scores.new_full((b, pad), float("-inf"))], 1)
        return items[:, :top_k].contiguous(), scores[:, :top_k].contiguous()

    def excluded_leaves(self, nodes: torch.Tensor, depth: int, exclude_items: torch.Tensor, k_cur: int) -> torch.Tensor:
        """Bool[B * k_cur, V_depth]: the candidate (beam row, token) completes an item excluded for the beam's user."""
        rows, v = nodes.shape[0], self.depth_vocab(depth)
        child = self.advance(nodes.cpu().repeat_interleave(v), torch.arange(v).repeat(rows), depth)
        leaf = self.leaf_item(child).view(rows, v)  # -1 where not an item
        excl = torch.as_tensor(exclude_items).long().cpu()
        if excl.dim() != 2 or excl.shape[0] * k_cur != rows:
            raise ValueError(f"exclude_items must be [B, E] with one row per user ({rows // k_cur}), got {tuple(excl.shape)}")
        n = self.num_items
        user = torch.arange(rows) // k_cur  # beam row -> user
        banned = (torch.arange(excl.shape[0])[:, None] * n + excl)[excl >= 0]  # user * N + item: one membership test
        return torch.isin(user[:, None] * n + leaf, banned) & (leaf >= 0)
