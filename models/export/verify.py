"""Verify a staged model repository version before it may be deployed: files intact, and the exported graphs
(run by the serving runtime itself, onnxruntime inside) give the eager model's answers.

    for every model m:  manifest sha256/size of version v of m match                (ModelFilesError otherwise)
    items_onnx, scores_onnx = runtime.beam_search(ONNX encoder + step of oxygenrec_generate/v, trie, arrays)
    items_eager, scores_eager = constrained_beam_search(model, arrays, trie)
    passed  <=>  items_onnx == items_eager  and  max |scores_onnx - scores_eager| <= atol
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.decoding import constrained_beam_search
from models.semantic_ids.trie import SIDTrie

from .onnx_export import interface, load_runtime
from .repository import MODELS

__all__ = ["ParityReport", "verify_staged_version"]


@dataclass(frozen=True)
class ParityReport:
    passed: bool
    users: int
    items_equal: bool
    max_score_diff: float
    atol: float
    problem: str = ""  # what failed, empty when passed


def verify_staged_version(staged: str | Path, version: int, model, trie: SIDTrie, arrays: dict[str, np.ndarray],
                          beam_width: int, top_k: int, atol: float = 1e-4) -> ParityReport:
    """Check the files of ``version`` of every model under ``staged`` and ONNX-vs-eager beam search parity
    on the serving inputs ``arrays`` (``serving_arrays`` output). Never raises for a bad repository: the
    report says what failed."""
    runtime = load_runtime()
    users = int(next(iter(arrays.values())).shape[0])
    try:
        for name in MODELS:
            runtime.verify_version_dir(Path(staged) / name / str(version))
        vdir = Path(staged) / "oxygenrec_generate" / str(version)
        gen = runtime.OnnxGenerator(vdir / "encoder.onnx", vdir / "decoder_step.onnx",
                                    interface(model.cfg)["constants"])
        items, scores = runtime.beam_search(gen, trie, arrays, beam_width, top_k)
    except Exception as e:  # corrupt files, graphs onnxruntime cannot load or run
        return ParityReport(False, users, False, float("inf"), atol, f"{type(e).__name__}: {str(e)[:400]}")
    with torch.no_grad():
        ref_items, ref_scores = constrained_beam_search(
            model, {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}, trie, beam_width, top_k)
    items_equal = bool(torch.equal(items, ref_items))
    finite = torch.isfinite(ref_scores)
    diff = float((scores - ref_scores)[finite].abs().max()) if finite.any() else 0.0
    problems = []
    if not items_equal:
        rows = int((items != ref_items).any(1).sum())
        problems.append(f"ONNX beam search returns other items than the eager model for {rows}/{users} users")
    if diff > atol:
        problems.append(f"max |score difference| {diff:.3g} > {atol}")
    return ParityReport(not problems, users, items_equal, diff, atol, "; ".join(problems))
