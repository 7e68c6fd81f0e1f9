"""Fixtures for tests against a REAL tritonserver: the binary (downloaded from PyPI once by
ensure_tritonserver, ~55 MB), a small random generator + 500-item catalog, its model repository and a running
server with the three models loaded. Module-scoped: one server start and one model load per test file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from models.export import MODELS, ServingConfig, write_model_repository
from models.nn import GeneratorConfig, OxygenGenerator
from models.semantic_ids.trie import SIDTrie
from triton_repo import TritonServer, ensure_tritonserver

VOCAB = (16, 16, 16, 4)


def small_generator(seed: int = 0) -> OxygenGenerator:
    """d_model 32, 1+1 layers, random weights with O(1) logits (the std-0.02 init leaves items near-tied,
    where a 1e-7 onnxruntime/torch difference could legitimately swap two equal-scored items)."""
    cfg = GeneratorConfig(vocab_sizes=VOCAB, n_scenarios=3, profile_vocab_size=40, n_profile_fields=3, d_model=32,
                          n_heads=4, enc_layers=1, dec_layers=1, max_short=5, max_long=9, igr_top_k=4, igr_dim=16,
                          igr_hidden=32, seed=seed)
    model = OxygenGenerator(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / p.shape[-1] ** 0.5)
    return model.eval()


def random_catalog(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.unique(np.stack([rng.integers(0, v, 4 * n) for v in VOCAB], 1), axis=0)
    return raw[rng.permutation(len(raw))[:n]]


@dataclass
class Served:
    server: TritonServer
    repo: Path
    model: OxygenGenerator
    trie: SIDTrie
    codes: np.ndarray
    item_ids: list[str]
    load_seconds: dict


@pytest.fixture(scope="session")
def triton_home() -> Path:
    return ensure_tritonserver()


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_home):
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("triton")
    model = small_generator()
    codes = random_catalog()
    trie = SIDTrie.from_codes(codes, VOCAB)
    ids = [f"sku-{i:05d}" for i in range(len(codes))]
    repo = tmp / "repo"
    write_model_repository(repo, 1, model, trie, ids, ServingConfig(max_batch_size=8, max_queue_delay_us=5000))
    server = TritonServer(repo, home=triton_home, log_path=tmp / "triton.log").start()
    try:
        loads = server.load_all(MODELS)
        yield Served(server, repo, model, trie, codes, ids, loads)
    finally:
        server.stop()
        torch.set_num_threads(n_threads)


# ------------------------------------------------------------------------------ a serving world (Feast + encoder)
@dataclass
class Staged:
    """A staged version: its directory (staged/<model>/1), the in-process model and trie, its client metadata."""

    root: Path
    model: OxygenGenerator
    trie: SIDTrie
    client: object  # models.export.VersionClient


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A real Feast store (SQLite online) over a small synthetic world, and an example encoder fitted on it
    (bench/serving_world.py); shared by every serving test of the session."""
    from bench.serving_world import ServingWorldConfig, build_serving_world

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield build_serving_world(tmp_path_factory.mktemp("serving_world") / "data",
                                  ServingWorldConfig(n_users=60, n_items=400))
    finally:
        torch.set_num_threads(n_threads)


def stage(world, out: Path, seed: int) -> Staged:
    """Stage version 1 of a random generator (``seed``) with ``world``'s encoder and SID table under ``out``."""
    from models.export import VersionClient

    root, model, trie = world.export(out, seed=seed,
                                     serving=ServingConfig(max_batch_size=8, max_queue_delay_us=200))
    return Staged(root, model, trie, VersionClient.load(root / "oxygenrec_generate" / "1"))


def in_process(staged: Staged, arrays: dict, beam: int = 20, top_k: int = 10) -> np.ndarray:
    """The staged model's own answer (catalog rows) for encoder arrays."""
    from models.decoding import constrained_beam_search

    with torch.no_grad():
        items, _ = constrained_beam_search(staged.model, {k: torch.from_numpy(v) for k, v in arrays.items()},
                                           staged.trie, beam, top_k)
    return items.numpy()
