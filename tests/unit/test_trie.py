"""SIDTrie: exact prefix sets vs brute force, invalid transitions, leaf mapping, dense == CSR, save/load."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from models.semantic_ids.trie import SIDTrie, TrieConfig

VOCAB = (5, 5, 5, 3)


def random_catalog(n: int, vocab=VOCAB, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.stack([rng.integers(0, v, 4 * n) for v in vocab], 1)
    codes = np.unique(raw, axis=0)
    return codes[rng.permutation(len(codes))[:n]]  # random subset in random row order


@pytest.fixture(params=["dense", "csr"])
def mode(request) -> str:
    return request.param


def test_allows_exactly_the_valid_prefixes_at_every_depth(mode):
    codes = random_catalog(60)
    trie = SIDTrie.from_codes(codes, VOCAB, TrieConfig(mode=mode))
    assert all(trie.is_dense(d) == (mode == "dense") for d in range(len(VOCAB)))
    for d in range(len(VOCAB) + 1):
        valid = {tuple(r[:d]) for r in codes.tolist()}
        every = list(itertools.product(*[range(v) for v in VOCAB[:d]]))  # all prefixes of length d
        prefixes = torch.tensor(every, dtype=torch.long).reshape(len(every), d)
        got = trie.is_valid_prefix(prefixes).tolist()
        assert got == [p in valid for p in every]
        assert trie.num_nodes(d) == len(valid)
        if d == len(VOCAB):
            continue
        # allowed_mask of every valid prefix node == brute-force set of next codes
        ok = [p for p in every if p in valid]
        nodes = trie.walk(torch.tensor(ok, dtype=torch.long).reshape(len(ok), d))
        mask = trie.allowed_mask(nodes, d)
        assert mask.shape == (len(ok), VOCAB[d])
        for p, row in zip(ok, mask.tolist()):
            expected = {r[d] for r in codes.tolist() if tuple(r[:d]) == p}
            assert {t for t in range(VOCAB[d]) if row[t]} == expected


def test_invalid_transitions_return_minus_one(mode):
    codes = np.array([[0, 1, 2, 0], [0, 1, 3, 1], [4, 0, 0, 2]])
    trie = SIDTrie.from_codes(codes, VOCAB, TrieConfig(mode=mode))
    root = trie.root_nodes(5)
    child = trie.advance(root, torch.tensor([0, 4, 1, -3, 7]), 0)  # 1 missing, -3 / 7 out of range
    assert (child[:2] >= 0).all() and child[2:].tolist() == [-1, -1, -1]
    assert trie.advance(torch.tensor([-1, -1]), torch.tensor([0, 1]), 1).tolist() == [-1, -1]
    assert not trie.allowed_mask(torch.tensor([-1]), 2).any()
    bad = torch.tensor([[0, 1, 4, 0], [0, 1, 2, 1], [4, 1, 0, 2], [1, 0, 0, 0]])
    assert not trie.is_valid_prefix(bad).any()
    assert trie.is_valid_prefix(torch.tensor([[0, 1], [4, 0], [0, 1]])).all()
    assert trie.lookup(bad).tolist() == [-1, -1, -1, -1]


def test_leaf_item_maps_back_to_the_row(mode):
    codes = random_catalog(80, seed=3)
    trie = SIDTrie.from_codes(torch.as_tensor(codes), VOCAB, TrieConfig(mode=mode))
    assert trie.num_items == len(codes)
    assert trie.lookup(torch.as_tensor(codes)).tolist() == list(range(len(codes)))
    assert trie.leaf_item(torch.tensor([-1])).tolist() == [-1]


def test_dense_and_csr_agree_on_random_queries():
    vocab = (16, 16, 16, 4)
    codes = random_catalog(3000, vocab, seed=7)
    dense = SIDTrie.from_codes(codes, vocab, TrieConfig(mode="dense"))
    csr = SIDTrie.from_codes(codes, vocab, TrieConfig(mode="csr"))
    auto = SIDTrie.from_codes(codes, vocab, TrieConfig(dense_max_entries=4000))  # mixes both forms
    assert [auto.is_dense(d) for d in range(4)] == [True, True, False, False]
    g = torch.Generator().manual_seed(0)
    for d in range(4):
        n = dense.num_nodes(d)
        nodes = torch.randint(-1, n, (512,), generator=g)  # includes -1
        toks = torch.randint(-1, vocab[d] + 1, (512,), generator=g)  # includes out-of-range tokens
        m = dense.allowed_mask(nodes, d)
        assert torch.equal(m, csr.allowed_mask(nodes, d)) and torch.equal(m, auto.allowed_mask(nodes, d))
        a = dense.advance(nodes, toks, d)
        assert torch.equal(a, csr.advance(nodes, toks, d)) and torch.equal(a, auto.advance(nodes, toks, d))
        assert (a >= 0).any() and (a < 0).any()  # the queries hit both cases
    full = torch.as_tensor(codes)
    assert torch.equal(csr.lookup(full), torch.arange(len(codes)))


def test_save_and_load_roundtrip(tmp_path):
    codes = random_catalog(50, seed=5)
    trie = SIDTrie.from_codes(codes, VOCAB)
    path = tmp_path / "trie.npz"
    np.savez(path, **trie.to_arrays())
    with np.load(path) as z:
        loaded = SIDTrie.from_arrays(z, TrieConfig(mode="csr"))
    assert loaded.vocab_sizes == VOCAB
    assert loaded.lookup(torch.as_tensor(codes)).tolist() == list(range(len(codes)))
    nodes = torch.arange(trie.num_nodes(2))
    assert torch.equal(loaded.allowed_mask(nodes, 2), trie.allowed_mask(nodes, 2))
    broken = trie.to_arrays()
    del broken["tokens_1"]
    with pytest.raises(ValueError, match="tokens_1"):
        SIDTrie.from_arrays(broken)


def test_bad_catalogs_raise():
    with pytest.raises(ValueError, match="duplicate"):
        SIDTrie.from_codes(np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]), VOCAB)
    with pytest.raises(ValueError, match=r"codes\[1, 3\]"):
        SIDTrie.from_codes(np.array([[0, 0, 0, 0], [1, 0, 0, 3]]), VOCAB)
    with pytest.raises(ValueError, match="columns"):
        SIDTrie.from_codes(np.zeros((3, 3), dtype=np.int64), VOCAB)
    trie = SIDTrie.from_codes(np.array([[0, 0, 0, 0]]), VOCAB)
    with pytest.raises(ValueError, match="depth"):
        trie.allowed_mask(torch.tensor([0]), 4)
