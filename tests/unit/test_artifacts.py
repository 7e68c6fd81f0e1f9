"""Crash-safe artifact writes (models/artifacts.py): a writer killed with SIGKILL in the middle of a write leaves
the previous file loadable; a failing writer leaves nothing behind; stale temporary files can be removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import atomic_write, atomic_write_json, remove_stale_temps, temp_path
from models.semantic_ids.codebook import SemanticIdCodebook, _version_hash
from models.semantic_ids.rq_kmeans import RQKMeansConfig

ROOT = Path(__file__).resolve().parents[2]

# A child process that rewrites one artifact in place forever (the "reuse the codebook" / "save the reward model
# again" case), with values ``fill``: killing it at a random moment must never destroy the previous file.
WRITER = r"""
import sys, time
import numpy as np, torch
sys.path.insert(0, {root!r})
from models.artifacts import atomic_write
from tests.unit.test_artifacts import big_codebook
kind, path, fill = sys.argv[1], sys.argv[2], float(sys.argv[3])
if kind == "codebook":
    cb = big_codebook(fill)
    save = lambda: cb.save(path)
else:
    state = {{"w": torch.full((1536, 1024), fill)}}
    save = lambda: atomic_write(path, lambda p: torch.save(state, p))
print("ready", flush=True)
while True:
    save()
"""


def big_codebook(fill: float, k: int = 512, dim: int = 2048) -> SemanticIdCodebook:
    """A codebook of 3 x 512 x 2048 float32 centroids (12 MB: a write takes a while), every value ``fill``."""
    levels = 3
    centroids = tuple(np.full((k, dim), fill, np.float32) for _ in range(levels))
    config = RQKMeansConfig(levels=levels, codebook_size=k)
    return SemanticIdCodebook(
        centroids=centroids, config=config, version=_version_hash(config, list(centroids)),
        fitted_at="2026-01-01T00:00:00Z",
        dim=dim, fit_level_mse=np.zeros(levels), fit_usage=tuple(np.zeros(k, np.int64) for _ in range(levels)),
        emb_mean=np.zeros(dim), emb_total_var=1.0, n_items_fit=k, fit_info={"fill": fill})


def _kill_mid_write(kind: str, path: Path, fill: float) -> bool:
    """Start a writer, SIGKILL it as soon as one of its temporary files exists (mid-write); True if a temporary
    file was left behind."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT)), kind, str(path), str(fill)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        deadline = time.monotonic() + 60
        prefix = f".{path.with_suffix('').name}."
        while time.monotonic() < deadline:
            if any(n.startswith(prefix) for n in os.listdir(path.parent)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        else:
            raise AssertionError("the writer never started a write")
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    return any(n.startswith(prefix) for n in os.listdir(path.parent))


def test_a_codebook_rewritten_in_place_survives_sigkill_mid_write(tmp_path):
    """Reusing a codebook saves the same version again over the live files (what semantic_id_codebook does when
    the staleness report is clean). A plain np.savez killed mid-write leaves a truncated zip that no longer loads."""
    codebook = big_codebook(1.0)
    path = tmp_path / "versions" / codebook.version
    npz, _ = codebook.save(path)
    left_temp = []
    for _ in range(2):
        left_temp.append(_kill_mid_write("codebook", npz, fill=1.0))
        cb = SemanticIdCodebook.load(path)  # both files complete
        assert all((c == 1.0).all() for c in cb.centroids) and cb.centroids[2].shape == (512, 2048)
    assert any(left_temp)  # at least one kill hit a write in progress (its temporary file stayed behind)
    removed = remove_stale_temps(npz.parent)
    assert removed and not [n for n in os.listdir(npz.parent) if n.startswith(".")]
    assert SemanticIdCodebook.load(path).dim == 2048


def test_a_checkpoint_survives_sigkill_mid_write(tmp_path):
    path = tmp_path / "reward_model.pt"
    atomic_write(path, lambda p: torch.save({"w": torch.full((1536, 1024), 1.0)}, p))
    left = _kill_mid_write("checkpoint", path, fill=2.0)
    state = torch.load(path, weights_only=True)
    assert state["w"].shape == (1536, 1024) and state["w"].unique().numel() == 1
    assert float(state["w"][0, 0]) in (1.0, 2.0)
    assert left == bool(remove_stale_temps(tmp_path))


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"version": 1})

    def broken(p: Path) -> None:
        p.write_text('{"version": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["manifest.json"]
    with pytest.raises(ValueError, match="did not create the temporary file"):
        atomic_write(path, lambda p: None)


def test_temporary_names_keep_the_suffix_writers_append():
    t = temp_path("/x/codebook.npz")  # np.savez appends .npz to a name without it
    assert t.parent == Path("/x") and t.name.startswith(".codebook.npz.") and t.name.endswith(".tmp.npz")
    plain = temp_path("/x/run")
    assert plain.name.startswith(".run.") and plain.name.endswith(".tmp")


def _model_writers(tmp_path: Path):
    """Every model-file writer of the pipeline, each bound to a tiny object: name -> save(path)."""
    import pandas as pd

    from models.eval.split import encode_ids
    from models.features.example_encoder import ExampleEncoder
    from models.lightning.sasrec_module import save_sasrec
    from models.lightning.train import save_generator
    from models.nn.config import GeneratorConfig
    from models.nn.generator import OxygenGenerator
    from models.nn.sasrec import SASRec, SASRecConfig
    from models.rl.reward_model import RewardModelConfig, _new_model, save_reward_model
    from models.semantic_ids.codebook import SemanticIdTable

    ids = encode_ids(np.array([f"i{i}" for i in range(6)], dtype=object))
    sasrec = SASRec(ids.n_ids, SASRecConfig(hidden=8, n_blocks=1, n_heads=1, max_len=4))
    generator = OxygenGenerator(GeneratorConfig(vocab_sizes=(4, 4), d_model=8, n_heads=1, enc_layers=1,
                                                dec_layers=1, use_igr=False))
    reward = _new_model(RewardModelConfig(user_dim=2, item_dim=2, num_scenarios=1, hidden_dim=4))
    table = SemanticIdTable.from_frame(pd.DataFrame({"item_id": ["a", "b"], "sid_0": [0, 1], "sid_1": [0, 0]}))
    encoder = ExampleEncoder.fit(pd.DataFrame({"profile_fields": [["age=30"]]}), table, ["home"])
    return {
        "generator": lambda p: save_generator(generator, p),
        "sasrec": lambda p: save_sasrec(sasrec, ids, p),
        "reward_model": lambda p: save_reward_model(reward, p),
        "example_encoder": lambda p: encoder.save(p),
    }


@pytest.mark.parametrize("name", ["generator", "sasrec", "reward_model", "example_encoder"])
def test_model_files_are_written_atomically(tmp_path, monkeypatch, name):
    """A save that dies at the final rename (disk full, killed) keeps the previous file and leaves no temporary."""
    save = _model_writers(tmp_path)[name]
    path = tmp_path / f"{name}.bin"
    save(path)
    before = path.read_bytes()

    def no_rename(*args, **kwargs):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
