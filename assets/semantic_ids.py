"""Semantic IDs: the RQ-KMeans codebook, every item's code tuple, and the prefix trie for decoding.

``semantic_id_codebook`` is gated by a blocking quality check, so a degenerate codebook (collapsed
levels, huge collisions) never reaches ``item_semantic_ids`` or anything trained on it.
"""

import dataclasses

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    asset,
    asset_check,
)

from models.configs import from_section
from models.semantic_ids import RQKMeansConfig, SemanticIdCodebook, SemanticIdTable, semantic_id_quality
from models.semantic_ids.lifecycle import assign_stable, fit_or_reuse
from models.semantic_ids.trie import SIDTrie
from orchestration.params import ParamsResource
from orchestration.resources import ArtifactStoreResource

from ._metadata import code_version, md, png_markdown, pyplot

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "semantic_ids"
QUALITY_COLUMNS = ["level", "coverage", "purity", "entropy", "gini", "recon_rel_mse"]


def rq_config(params: ParamsResource) -> RQKMeansConfig:
    settings = params.settings
    section = settings.semantic_ids
    return from_section(RQKMeansConfig, section.model_dump(), seed=settings.seed)


def purity_labels(items: pd.DataFrame) -> np.ndarray:
    """Top level of the category path ("Sports > Running Shoes" -> "Sports"): what purity is measured on."""
    return items["category"].astype(str).str.split(">").str[0].str.strip().to_numpy()


def usage_plot(codes: np.ndarray, codebook_size: int):
    levels = codes.shape[1]
    figure, axes = pyplot().subplots(1, levels, figsize=(4 * levels, 2.6), sharey=True)
    for level, axis in enumerate(np.atleast_1d(axes)):
        counts = np.sort(np.bincount(codes[:, level], minlength=codebook_size))[::-1]
        axis.bar(np.arange(codebook_size), counts, width=1.0)
        axis.set_title(f"level {level + 1}: items per code (sorted)")
        axis.set_xlabel("code rank")
    np.atleast_1d(axes)[0].set_ylabel("items")
    figure.tight_layout()
    return png_markdown(figure)


@asset(group_name=GROUP, kinds={"torch"}, code_version=CODE_VERSION)
def semantic_id_codebook(
    context: AssetExecutionContext,
    catalog_embeddings: dict,
    raw_items: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> dict:
    """3-level residual k-means codebook over the fused item embeddings (versioned files + manifest).

    With ``refit: auto`` the served codebook is kept while its staleness report is clean, so item SIDs
    stay stable from one day to the next; a refit happens when drift, a config change or a new embedding
    space asks for it.
    """
    config = rq_config(params)
    embeddings = catalog_embeddings["fused"]
    store = artifacts.asset_dir("semantic_id_codebook")
    manifest = artifacts.previous("semantic_id_codebook")
    previous = SemanticIdCodebook.load(store / "versions" / manifest["version"]) if manifest else None
    codebook, codes, decision = fit_or_reuse(embeddings, config, previous, params.settings.semantic_ids.refit)
    context.log.info(f"codebook {codebook.version}: {decision.reason}")
    npz_path, json_path = codebook.save(store / "versions" / codebook.version)

    metrics, table = semantic_id_quality(
        codes, purity_labels(raw_items), codebook.codebook_sizes, embeddings=embeddings, codebook=codebook
    )
    context.add_output_metadata(
        {
            "codebook_version": codebook.version,
            "refit": decision.refit,
            "decision": decision.reason,
            "parameters": MetadataValue.json(dataclasses.asdict(config)),
            "quality": md(table),
            "l1_coverage": float(metrics["l1_coverage"]),
            "collision_p99": float(metrics["collision_p99"]),
            "collision_max": int(metrics["collision_max"]),
            "code_usage": usage_plot(codes, max(codebook.codebook_sizes)),
            "staleness": MetadataValue.json(decision.staleness or {}),
        }
    )
    return {
        "version": codebook.version,
        "npz": str(npz_path),
        "json": str(json_path),
        "refit": decision.refit,
        "decision": decision.reason,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "codebook_sizes": list(codebook.codebook_sizes),
    }


@asset_check(asset=semantic_id_codebook, blocking=True, description="coverage / collision / purity thresholds")
def semantic_id_quality_gate(semantic_id_codebook: dict, params: ParamsResource) -> AssetCheckResult:
    gate = params.settings.semantic_ids.gate
    metrics = semantic_id_codebook["metrics"]
    rules = [
        ("l1_coverage", metrics["l1_coverage"], ">=", gate.min_l1_coverage),
        ("collision_p99", metrics["collision_p99"], "<=", gate.max_collision_p99),
        ("l1_purity", metrics["l1_purity"], ">=", gate.min_l1_purity),
    ]
    failed = [r for r in rules if not (r[1] >= r[3] if r[2] == ">=" else r[1] <= r[3])]
    rows = pd.DataFrame(
        [{"metric": n, "value": v, "rule": f"{op} {t}", "passed": r not in failed} for r in rules for n, v, op, t in [r]]
    )
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(f"{n} = {v:.4g} violates {op} {t}" for n, v, op, t in failed) or "codebook quality ok",
        metadata={"thresholds": md(rows), "codebook_version": semantic_id_codebook["version"]},
    )


@asset(group_name=GROUP, kinds={"pandas", "parquet"}, code_version=CODE_VERSION)
def item_semantic_ids(
    context: AssetExecutionContext,
    semantic_id_codebook: dict,
    catalog_embeddings: dict,
    artifacts: ArtifactStoreResource,
) -> pd.DataFrame:
    """item_id -> (sid_0 .. sid_{L-1}, disambiguation): unique, invertible, stable under the same codebook."""
    codebook = SemanticIdCodebook.load(semantic_id_codebook["npz"])
    previous_frame = artifacts.previous("item_semantic_ids")
    previous = SemanticIdTable.from_frame(previous_frame) if previous_frame is not None else None
    table, n_new = assign_stable(codebook, catalog_embeddings["item_ids"], catalog_embeddings["fused"], previous)
    frame = table.to_frame()
    context.add_output_metadata(
        {
            "dagster/row_count": len(frame),
            "codebook_version": codebook.version,
            "newly_assigned": n_new,
            "kept_from_previous": len(frame) - n_new,
            "vocab_sizes": MetadataValue.json(list(table.vocab_sizes)),
            "preview": md(frame.head(5)),
        }
    )
    return frame


@asset(group_name=GROUP, kinds={"torch", "numpy"}, code_version=CODE_VERSION)
def sid_trie(context: AssetExecutionContext, item_semantic_ids: pd.DataFrame) -> dict[str, np.ndarray]:
    """Prefix trie of the valid SID tuples, in the array form constrained decoding and Triton load."""
    table = SemanticIdTable.from_frame(item_semantic_ids)
    trie = SIDTrie.from_codes(table.codes, table.vocab_sizes)
    arrays = trie.to_arrays()
    context.add_output_metadata(
        {
            "items": len(table),
            "vocab_sizes": MetadataValue.json(list(table.vocab_sizes)),
            "nodes_per_depth": MetadataValue.json([int(trie.num_nodes(d)) for d in range(len(table.vocab_sizes) + 1)]),
        }
    )
    return {**arrays, "item_ids": table.item_ids.astype(str)}
