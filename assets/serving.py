"""Serving: export the serving candidate (the RL policy, or its SFT model when RL did not clear the gate) into a
self-contained Triton model repository version (its example encoder and SID table travel with it) and roll it out.

``deployed_model`` runs triton_repo/deploy.py: the new version is loaded as a separate candidate model, smoke-tested
against the in-process beam search, compared with the serving version on the smoke users and replayed recent
requests (canary: overlap@10 and latency; ``TritonResource.canary_min_overlap`` can block), then promoted; any
failure rolls back. One deployment at a time: a lock inside deploy, the local instance queues the runs tagged
``oxyrec/deploy`` one at a time (orchestration/dagster.yaml), and the asset sits in the Dagster pool
``triton_deploy`` for an instance that limits pools (``concurrency: pools``).
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
from models.export import ServingConfig, VersionClient, write_model_repository
from models.export.version_client import AGE_COLUMNS, ONLINE_COLUMNS
from models.export.verify import verify_staged_version
from models.features.example_encoder import ExampleEncoder
from models.lightning.train import load_generator
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie
from orchestration.resources import ArtifactStoreResource, FeatureStoreResource, TritonResource
from triton_repo.deploy import deploy
from triton_repo.recommend import REQUEST_LOG, online_rows
from triton_repo.request_log import RequestLog

from ._metadata import code_version, md

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
GROUP = "serving"
DEPLOY_POOL = "triton_deploy"  # Dagster concurrency pool (limit it with `concurrency: pools` on a production instance)
SMOKE_USERS = 8
SMOKE_BEAM, SMOKE_TOP_K = 20, 10
GENERATE = "oxygenrec_generate"


# serving_candidate is the RL policy or its SFT model (whichever the paired gate prefers), and the SFT model was
# itself gated (sft_beats_baseline) before RL started from it
@asset(group_name=GROUP, kinds={"onnx", "triton"}, code_version=CODE_VERSION)
def triton_model_repository(
    context: AssetExecutionContext, serving_candidate: dict, item_semantic_ids: pd.DataFrame,
    artifacts: ArtifactStoreResource,
) -> dict:
    """The serving candidate exported to ONNX and rendered into a staged Triton repository version (not yet served),
    with the example encoder and SID table its clients need (client.json, sid_codes.npy)."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    model = load_generator(serving_candidate["checkpoint"])
    encoder = ExampleEncoder.load(serving_candidate["encoder"], sid_table)
    trie = SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)
    staged = artifacts.asset_dir("triton_model_repository") / "staged"
    shutil.rmtree(staged, ignore_errors=True)  # staging only: the served repository is never touched here
    paths = write_model_repository(staged, 1, model, trie, sid_table.item_ids, ServingConfig(), encoder=encoder)
    client = VersionClient.load(paths[GENERATE])
    context.add_output_metadata({"staged": str(staged), "source_checkpoint": serving_candidate["checkpoint"],
                                 "served": serving_candidate["served"],
                                 "algorithm": serving_candidate.get("algorithm", ""),
                                 "codebook_version": client.sid_table.codebook_version,
                                 "sid_table_sha256": client.sid_sha256[:16],
                                 "models": MetadataValue.json({k: str(v) for k, v in paths.items()})})
    return {"staged": str(staged), "checkpoint": serving_candidate["checkpoint"], "encoder": serving_candidate["encoder"],
            "served": serving_candidate["served"], "generator_config": model.cfg.to_dict()}


def load_exported(manifest: dict, item_semantic_ids: pd.DataFrame):
    """(SID table, generator, example encoder, trie) of the model a triton_model_repository manifest exported."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    model = load_generator(manifest["checkpoint"])
    encoder = ExampleEncoder.load(manifest["encoder"], sid_table)
    return sid_table, model, encoder, SIDTrie.from_codes(sid_table.codes, sid_table.vocab_sizes)


def smoke_inputs(training_examples: pd.DataFrame, staged: str) -> tuple[pd.DataFrame, dict]:
    """The fixed smoke users (first test examples) and their input arrays, built from the staged version's own
    client metadata (what every client of that version will use)."""
    smoke = training_examples[training_examples["split"] == "test"].head(SMOKE_USERS).reset_index(drop=True)
    return smoke, VersionClient.load(f"{staged}/{GENERATE}/1").inputs(smoke)


@asset_check(asset=triton_model_repository, blocking=True,
             additional_ins={"training_examples": AssetIn("training_examples"),
                             "item_semantic_ids": AssetIn("item_semantic_ids")},
             description="staged files match their manifests; ONNX beam search == eager beam search for smoke users")
def exported_model_parity(
    triton_model_repository: dict, training_examples: pd.DataFrame, item_semantic_ids: pd.DataFrame
) -> AssetCheckResult:
    sid_table, model, encoder, trie = load_exported(triton_model_repository, item_semantic_ids)
    _, arrays = smoke_inputs(training_examples, triton_model_repository["staged"])
    report = verify_staged_version(triton_model_repository["staged"], 1, model, trie, arrays, SMOKE_BEAM, SMOKE_TOP_K)
    return AssetCheckResult(
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=report.problem or f"ONNX == eager for {report.users} smoke users (max score diff "
                                      f"{report.max_score_diff:.2g})",
        metadata={"users": report.users, "items_equal": report.items_equal,
                  "max_score_diff": report.max_score_diff, "atol": report.atol},
    )


def canary_rows(smoke: pd.DataFrame, artifacts: ArtifactStoreResource, feature_store: FeatureStoreResource,
                replay: int) -> pd.DataFrame:
    """The canary's requests: the smoke users (their example's features) and the ``replay`` most recent served
    requests of the request log (their current online features), one row each."""
    columns = ["user_id", "scenario", *ONLINE_COLUMNS]

    def pick(frame: pd.DataFrame) -> pd.DataFrame:  # + the instruction-age columns the rows have
        return frame[columns + [c for c in AGE_COLUMNS if c in frame.columns]]

    rows = [pick(smoke).assign(source="smoke")]
    recent = RequestLog(artifacts.asset_dir(REQUEST_LOG.parts[0]) / REQUEST_LOG.name).recent(replay)
    if recent:
        requests = pd.DataFrame(recent)[["user_id", "scenario"]].drop_duplicates(keep="last").reset_index(drop=True)
        replayed = online_rows(feature_store.store(), requests)
        rows.append(pick(replayed).assign(source="replay"))
    return pd.concat(rows, ignore_index=True)


@asset(group_name=GROUP, kinds={"triton"}, code_version=CODE_VERSION, pool=DEPLOY_POOL)
def deployed_model(
    context: AssetExecutionContext,
    triton_model_repository: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    triton: TritonResource,
    artifacts: ArtifactStoreResource,
    feature_store: FeatureStoreResource,
) -> dict:
    """Version N+1 served by Triton after passing its smoke test and canary, or version N kept (rollback)."""
    sid_table, model, encoder, trie = load_exported(triton_model_repository, item_semantic_ids)
    smoke, arrays = smoke_inputs(training_examples, triton_model_repository["staged"])
    expected, _ = constrained_beam_search(
        model, {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}, trie, SMOKE_BEAM, SMOKE_TOP_K
    )
    canary = canary_rows(smoke, artifacts, feature_store, triton.canary_replay)
    result = deploy(triton.control(), triton.url, triton.repository_path(), triton_model_repository["staged"], arrays,
                    expected.numpy(), SMOKE_BEAM, SMOKE_TOP_K, canary_frame=canary, policy=triton.policy(),
                    on_step=lambda step: context.log.info(f"deploy: {step}"))
    for warning in result.warnings:
        context.log.warning(f"deploy: {warning}")
    items = sid_table.item_ids[expected.numpy().clip(0)]
    preview = pd.DataFrame({"user_id": smoke["user_id"], "scenario": smoke["scenario"],
                            "served top-3": [", ".join(row[:3]) for row in items]})
    report = result.canary or {}
    context.add_output_metadata(
        {
            "url": triton.url,
            "versions": MetadataValue.json(result.versions),
            "previous_versions": MetadataValue.json(result.previous),
            "load_seconds": MetadataValue.json({k: round(v, 2) for k, v in result.load_seconds.items()}),
            "smoke_users": result.smoke_users,
            "smoke_preview": md(preview),
            "canary_overlap@10": report.get("overlap@10") if report.get("overlap@10") is not None else "n/a",
            "canary": MetadataValue.json(report or {"skipped": "first deployment: no serving version to compare"}),
            "pruned_versions": MetadataValue.json(result.pruned),
            "steps_seconds": MetadataValue.json(dict(result.steps)),
        }
    )
    return {"url": triton.url, "repository": str(triton.repository_path()), "versions": result.versions,
            "canary": report}
