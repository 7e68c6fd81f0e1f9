"""Day-to-day life of a served codebook: refit only when needed, keep item SIDs stable otherwise.

A generator trained on yesterday's semantic IDs can only serve items whose IDs did not move, so the
daily pipeline reuses the current codebook while its staleness report is clean and assigns new items
incrementally (existing items keep their tuples); it refits when the report asks for it, when the config
changed, or when told to (``refit="always"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from .codebook import SemanticIdCodebook, SemanticIdTable, assign_semantic_ids, extend_semantic_ids, fit_encode
from .rq_kmeans import RQKMeansConfig

RefitPolicy = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class CodebookDecision:
    refit: bool
    reason: str
    staleness: dict | None


def decide_refit(
    previous: SemanticIdCodebook | None, embeddings: np.ndarray, config: RQKMeansConfig, policy: RefitPolicy
) -> CodebookDecision:
    if previous is None:
        return CodebookDecision(True, "no previous codebook", None)
    if policy == "always":
        return CodebookDecision(True, "refit policy is 'always'", None)
    if asdict(previous.config) != asdict(config):
        if policy == "never":
            raise ValueError("semantic_ids config changed but refit policy is 'never': refit or restore the config")
        return CodebookDecision(True, "codebook config changed", None)
    if previous.dim != embeddings.shape[1]:
        return CodebookDecision(True, f"embedding dimension changed {previous.dim} -> {embeddings.shape[1]}", None)
    report = previous.staleness_report(embeddings)
    if report["refit_recommended"] and policy == "auto":
        return CodebookDecision(True, "stale: " + "; ".join(report["reasons"]), report)
    return CodebookDecision(False, "current codebook is fresh" if policy == "auto" else "refit policy is 'never'", report)


def fit_or_reuse(
    embeddings: np.ndarray, config: RQKMeansConfig, previous: SemanticIdCodebook | None, policy: RefitPolicy = "auto"
) -> tuple[SemanticIdCodebook, np.ndarray, CodebookDecision]:
    """Return (codebook, codes [N, L] before disambiguation, decision)."""
    decision = decide_refit(previous, embeddings, config, policy)
    if decision.refit:
        codebook, codes = fit_encode(embeddings, config)
    else:
        codebook, codes = previous, previous.encode(embeddings)
    return codebook, codes, decision


def assign_stable(
    codebook: SemanticIdCodebook, item_ids: np.ndarray, embeddings: np.ndarray, previous: SemanticIdTable | None
) -> tuple[SemanticIdTable, int]:
    """SIDs for every catalog item; with the same codebook as ``previous``, existing items keep theirs.

    Returns (table restricted to the current catalog, number of newly assigned items).
    """
    item_ids = np.asarray(item_ids).astype(str)
    if previous is None or previous.codebook_version != codebook.version:
        table = assign_semantic_ids(item_ids, codebook.encode(embeddings), codebook.version, codebook.codebook_sizes)
        return table, len(item_ids)
    known = np.isin(item_ids, previous.item_ids)
    extended = extend_semantic_ids(codebook, previous, item_ids[~known], embeddings[~known]) if (~known).any() else previous
    # Keep catalog order, and drop items that left the catalog (their tuples stay reserved in `previous`).
    codes = extended.lookup_codes(item_ids)
    table = SemanticIdTable(item_ids, codes, codebook.version, tuple(codebook.codebook_sizes))
    return table, int((~known).sum())
