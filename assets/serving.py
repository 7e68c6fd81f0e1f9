"""Serving: export the serving candidate (the RL policy, or its SFT model when RL did not clear the gate) into a
Triton model repository version and deploy it atomically.

``deployed_model`` publishes version N+1 of every model into the repository the server watches, loads it,
checks that the served recommendations equal the in-process beam search for fixed smoke users, and rolls
back on any failure, so the served model never breaks.
"""

import shutil

import numpy as np
import pandas as pd
import torch
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    asset,
    asset_check,
)

from models.decoding import constrained_beam_search
from models.export import ServingConfig, serving_arrays, write_model_repository
from models.export.verify import verify_staged_version
from models.lightning.generator_data import ExampleEncoder
from models.lightning.train import load_generator
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie
from orchestration.resources import ArtifactStoreResource, TritonResource
from orchestration.serving.deploy import deploy

from ._metadata import md

GROUP = "serving"
SMOKE_USERS = 8
SMOKE_BEAM, SMOKE_TOP_K = 20, 10


# serving_candidate is the RL policy or its SFT model (whichever the paired gate prefers), and the SFT model was
# itself gated (sft_beats_baseline) before RL started from it
@asset(group_name=GROUP, kinds={"onnx", "triton"}, code_version="3")
def triton_model_repository(
    context: AssetExecutionContext, serving_candidate: dict, item_semantic_ids: pd.DataFrame,
    artifacts: ArtifactStoreResource,
) -> dict:
    """The serving candidate exported to ONNX and rendered into a staged Triton repository version (not yet served)."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    model = load_generator(serving_candidate["checkpoint"])
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    staged = artifacts.asset_dir("triton_model_repository") / "staged"
    shutil.rmtree(staged, ignore_errors=True)  # staging only: the served repository is never touched here
    paths = write_model_repository(staged, 1, model, trie, sid_table.item_ids, ServingConfig())
    context.add_output_metadata({"staged": str(staged), "source_checkpoint": serving_candidate["checkpoint"],
                                 "served": serving_candidate["served"],
                                 "algorithm": serving_candidate.get("algorithm", ""),
                                 "models": MetadataValue.json({k: str(v) for k, v in paths.items()})})
    return {"staged": str(staged), "checkpoint": serving_candidate["checkpoint"], "encoder": serving_candidate["encoder"],
            "served": serving_candidate["served"], "generator_config": model.cfg.to_dict()}


def load_exported(manifest: dict, item_semantic_ids: pd.DataFrame):
    """(SID table, generator, example encoder, trie) of the model a triton_model_repository manifest exported."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    model = load_generator(manifest["checkpoint"])
    encoder = ExampleEncoder.load(manifest["encoder"], sid_table)
    return sid_table, model, encoder, SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)


def smoke_inputs(training_examples: pd.DataFrame, encoder: ExampleEncoder, model) -> tuple[pd.DataFrame, dict]:
    """The fixed smoke users (first test examples) and their serving input arrays."""
    smoke = training_examples[training_examples["split"] == "test"].head(SMOKE_USERS).reset_index(drop=True)
    return smoke, serving_arrays(encoder.encode(smoke, targets=False), model.cfg)


@asset_check(asset=triton_model_repository, blocking=True,
             additional_ins={"training_examples": AssetIn("training_examples"),
                             "item_semantic_ids": AssetIn("item_semantic_ids")},
             description="staged files match their manifests; ONNX beam search == eager beam search for smoke users")
def exported_model_parity(
    triton_model_repository: dict, training_examples: pd.DataFrame, item_semantic_ids: pd.DataFrame
) -> AssetCheckResult:
    sid_table, model, encoder, trie = load_exported(triton_model_repository, item_semantic_ids)
    _, arrays = smoke_inputs(training_examples, encoder, model)
    report = verify_staged_version(triton_model_repository["staged"], 1, model, trie, arrays, SMOKE_BEAM, SMOKE_TOP_K)
    return AssetCheckResult(
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=report.problem or f"ONNX == eager for {report.users} smoke users (max score diff "
                                      f"{report.max_score_diff:.2g})",
        metadata={"users": report.users, "items_equal": report.items_equal,
                  "max_score_diff": report.max_score_diff, "atol": report.atol},
    )


@asset(group_name=GROUP, kinds={"triton"}, code_version="1")
def deployed_model(
    context: AssetExecutionContext,
    triton_model_repository: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    triton: TritonResource,
) -> dict:
    """Version N+1 served by Triton after a passing smoke test, or the previous version kept (rollback)."""
    sid_table, model, encoder, trie = load_exported(triton_model_repository, item_semantic_ids)
    smoke, arrays = smoke_inputs(training_examples, encoder, model)
    expected, _ = constrained_beam_search(
        model, {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}, trie, SMOKE_BEAM, SMOKE_TOP_K
    )
    control = triton.control()
    try:
        result = deploy(control, triton.url, triton.repository_path(), triton_model_repository["staged"], arrays,
                        expected.numpy(), SMOKE_BEAM, SMOKE_TOP_K)
    finally:
        control.close()
    items = sid_table.item_ids[expected.numpy().clip(0)]
    preview = pd.DataFrame({"user_id": smoke["user_id"], "scenario": smoke["scenario"],
                            "served top-3": [", ".join(row[:3]) for row in items]})
    context.add_output_metadata(
        {
            "url": triton.url,
            "versions": MetadataValue.json(result.versions),
            "previous_versions": MetadataValue.json(result.previous),
            "load_seconds": MetadataValue.json({k: round(v, 2) for k, v in result.load_seconds.items()}),
            "smoke_users": result.smoke_users,
            "smoke_preview": md(preview),
        }
    )
    return {"url": triton.url, "repository": str(triton.repository_path()), "versions": result.versions}
