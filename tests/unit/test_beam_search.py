"""Trie-constrained beam search: valid unique items, exact vs brute force, short catalogs, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.decoding import constrained_beam_search, score_all_items
from models.nn import GeneratorConfig, OxygenGenerator
from models.semantic_ids.trie import SIDTrie, TrieConfig

VOCAB = (6, 6, 6, 2)


# tiny tensors: one intra-op thread (the shared fixture in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def catalog(n: int, vocab=VOCAB, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.unique(np.stack([rng.integers(0, v, 4 * n) for v in vocab], 1), axis=0)
    return raw[rng.permutation(len(raw))[:n]]


def model_for(vocab=VOCAB, seed: int = 0, **kw) -> OxygenGenerator:
    cfg = GeneratorConfig(vocab_sizes=vocab, n_scenarios=3, profile_vocab_size=30, n_profile_fields=3, d_model=32,
                          n_heads=4, dropout=0.1, max_short=5, max_long=8, igr_top_k=3, igr_dim=16, igr_hidden=32,
                          seed=seed, **kw)
    return OxygenGenerator(cfg)


def mixed_batch(codes: np.ndarray, b: int = 4, seed: int = 0) -> dict:
    """Histories drawn from the catalog with mixed lengths (incl. empty) and padding holding junk."""
    g = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(codes)
    short = c[torch.randint(0, len(c), (b, 5), generator=g)]
    long = c[torch.randint(0, len(c), (b, 8), generator=g)]
    short_mask = torch.arange(5)[None] < torch.tensor([0, 5, 2, 3])[:b, None]
    long_mask = torch.arange(8)[None] < torch.tensor([8, 1, 0, 5])[:b, None]
    return {
        "scenario": torch.tensor([0, 1, 2, 1])[:b],
        "profile": torch.randint(0, 30, (b, 3), generator=g),
        "instruction_emb": torch.randn(b, 384, generator=g),
        "has_instruction": torch.tensor([True, False, True, False])[:b],
        "short_sids": torch.where(short_mask[..., None], short, -1),
        "short_mask": short_mask,
        "long_sids": long,
        "long_mask": long_mask,
    }


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_wide_beam_equals_brute_force_top_k(ffn):
    codes = catalog(30)
    model = model_for(ffn=ffn)
    trie = SIDTrie.from_codes(codes, VOCAB)
    batch = mixed_batch(codes)
    items, scores = constrained_beam_search(model, batch, trie, beam_width=32, top_k=10)
    brute = score_all_items(model, batch, codes)
    best_scores, best_items = brute.topk(10, dim=1)
    assert torch.equal(items, best_items)
    assert torch.allclose(scores, best_scores, atol=1e-5)
    assert model.training  # the caller's mode is restored


def test_returns_only_valid_unique_items_with_their_true_scores():
    vocab = (8, 8, 8, 3)
    codes = catalog(300, vocab, seed=1)
    model = model_for(vocab, seed=1)
    trie = SIDTrie.from_codes(codes, vocab)
    batch = mixed_batch(codes, seed=1)
    items, scores = constrained_beam_search(model, batch, trie, beam_width=16, top_k=10)
    assert items.shape == (4, 10) and scores.shape == (4, 10)
    assert ((items >= 0) & (items < len(codes))).all()
    assert all(len(set(row)) == 10 for row in items.tolist())
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    brute = score_all_items(model, batch, codes)
    # each returned score is the model's log-prob of exactly that item's code tuple
    assert torch.allclose(scores, brute.gather(1, items), atol=1e-5)
    assert (scores[:, 0] <= brute.max(1).values + 1e-5).all()


def test_catalog_smaller_than_beam_pads_with_invalid_marker():
    codes = np.array([[0, 1, 2, 0], [0, 1, 2, 1], [5, 5, 5, 1]])
    model = model_for()
    trie = SIDTrie.from_codes(codes, VOCAB)
    batch = mixed_batch(catalog(10), b=2)
    items, scores = constrained_beam_search(model, batch, trie, beam_width=8, top_k=8)
    for row_items, row_scores in zip(items.tolist(), scores.tolist()):
        assert sorted(row_items[:3]) == [0, 1, 2]
        assert row_items[3:] == [-1] * 5
        assert all(np.isfinite(row_scores[:3])) and all(s == float("-inf") for s in row_scores[3:])
    brute = score_all_items(model, batch, codes)
    assert torch.allclose(scores[:, :3], brute.sort(1, descending=True).values, atol=1e-5)


def test_deterministic_and_independent_of_trie_form():
    codes = catalog(120, seed=2)
    model = model_for(seed=2)
    batch = mixed_batch(codes, seed=2)
    dense = SIDTrie.from_codes(codes, VOCAB, TrieConfig(mode="dense"))
    csr = SIDTrie.from_codes(codes, VOCAB, TrieConfig(mode="csr"))
    a = constrained_beam_search(model, batch, dense, beam_width=8, top_k=5)
    b = constrained_beam_search(model, batch, dense, beam_width=8, top_k=5)
    c = constrained_beam_search(model, batch, csr, beam_width=8, top_k=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])


def test_batch_rows_are_independent():
    codes = catalog(60, seed=3)
    model = model_for(seed=3)
    trie = SIDTrie.from_codes(codes, VOCAB)
    batch = mixed_batch(codes, seed=3)
    items, scores = constrained_beam_search(model, batch, trie, beam_width=8, top_k=4)
    single = {k: v[2:3] for k, v in batch.items()}
    i1, s1 = constrained_beam_search(model, single, trie, beam_width=8, top_k=4)
    assert torch.equal(i1[0], items[2]) and torch.allclose(s1[0], scores[2], atol=1e-5)


def test_bad_arguments_raise():
    codes = catalog(20)
    model = model_for()
    batch = mixed_batch(codes, b=1)
    with pytest.raises(ValueError, match="top_k"):
        constrained_beam_search(model, batch, SIDTrie.from_codes(codes, VOCAB), beam_width=4, top_k=5)
    other = SIDTrie.from_codes(np.array([[0, 0, 0, 0]]), (6, 6, 6, 3))
    with pytest.raises(ValueError, match="vocab_sizes"):
        constrained_beam_search(model, batch, other, beam_width=4)
    with pytest.raises(ValueError, match="codes"):
        score_all_items(model, batch, codes[:, :3])


def test_excluded_items_never_returned_and_wide_beam_equals_masked_brute_force():
    codes = catalog(30)
    model = model_for()
    trie = SIDTrie.from_codes(codes, VOCAB)
    batch = mixed_batch(codes)
    brute = score_all_items(model, batch, codes)
    # exclude each user's 3 best items (+ padding), different per user
    top3 = brute.topk(3, dim=1).indices
    exclude = torch.cat([top3, torch.full((4, 2), -1)], 1)
    items, scores = constrained_beam_search(model, batch, trie, beam_width=32, top_k=10, exclude_items=exclude)
    masked = brute.scatter(1, top3, float("-inf"))
    best_scores, best_items = masked.topk(10, dim=1)
    assert torch.equal(items, best_items)
    assert torch.allclose(scores, best_scores, atol=1e-5)
    assert not (items[:, :, None] == top3[:, None, :]).any()
    with pytest.raises(ValueError):
        constrained_beam_search(model, batch, trie, beam_width=32, top_k=10, exclude_items=exclude[:2])
