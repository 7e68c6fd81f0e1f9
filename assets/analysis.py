"""The on-demand analysis assets (group "analysis", never in the scheduled jobs): the semantic-ID variants, the
paper's SFT ablations and the RL algorithm comparison, with the pipeline's configs, seeds and budgets."""

import dataclasses

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, asset

from models.artifacts import atomic_write_json, atomic_write_text
from models.lightning.ablations import run_ablations, summary_table
from models.rl.experiment import compare_algorithms, comparison_summary
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.metrics import compare_variants
from orchestration.params import ParamsResource
from orchestration.partitions import SCENARIOS
from orchestration.resources import ArtifactStoreResource

from ._metadata import code_version, errorbar_panels, markdown_table, md
from .rl import rl_experiment, rl_run, step_logger
from .semantic_ids import purity_labels, rq_config
from .training import configs, run_key

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports
SID_COLUMNS = ["embeddings", "assignment", "l1_coverage", "l2_coverage", "l3_coverage", "l1_purity", "l2_purity",
               "collision_max", "collision_p99", "collision_p999", "collision_share", "l1_entropy", "l1_gini"]


@asset(group_name="analysis", kinds={"torch"}, code_version=CODE_VERSION)
def semantic_id_comparison(
    context: AssetExecutionContext, catalog_embeddings: dict, raw_items: pd.DataFrame, params: ParamsResource
) -> pd.DataFrame:
    """Text-only vs fused embeddings (the paper's V1 vs V4) x plain vs balanced assignment, same seed (four fits)."""
    frame = compare_variants({"text": catalog_embeddings["text"], "fused": catalog_embeddings["fused"]},
                             purity_labels(raw_items), rq_config(params), log=context.log.info)
    context.add_output_metadata({"comparison": md(frame[[c for c in SID_COLUMNS if c in frame.columns]])})
    return frame


@asset(group_name="analysis", kinds={"pytorch", "lightning"}, code_version=CODE_VERSION)
def sft_ablations(
    context: AssetExecutionContext,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> pd.DataFrame:
    """Paper Tables 5 / 7 / 8 on this data: instruction position, IGR/Q2I on/off, unified vs per-scenario models,
    each trained with the same seed and budget and scored on the same test split."""
    sid_table = SemanticIdTable.from_frame(item_semantic_ids)
    generator, sft = configs(params)
    section = params.settings.sft.ablations
    sft = dataclasses.replace(
        sft, enable_progress_bar=False,
        max_epochs=section.max_epochs or sft.max_epochs,
        limit_train_batches=section.limit_train_batches or sft.limit_train_batches,
    )
    out_dir = artifacts.asset_dir("sft_ablations") / run_key(training_examples, sid_table, generator, sft)
    results = run_ablations(training_examples, sid_table, SCENARIOS, generator, sft, section.studies, out_dir,
                            log=context.log.info)
    summary = summary_table(results)
    report = "\n\n".join(f"### {study}\n\n" + markdown_table(summary[summary["study"] == study])
                           for study in summary["study"].unique())
    atomic_write_text(out_dir / "ablations.md", report + "\n")
    atomic_write_json(out_dir / "ablations.json", summary.to_dict(orient="records"), indent=1)
    context.add_output_metadata({"summary": MetadataValue.md(report), "report": str(out_dir / "ablations.md"),
                                 "variants": int(len(summary))})
    return results


@asset(group_name="analysis", kinds={"pytorch"}, code_version=CODE_VERSION)
def rl_comparison(
    context: AssetExecutionContext,
    sft_model: dict,
    reward_model: dict,
    training_examples: pd.DataFrame,
    item_semantic_ids: pd.DataFrame,
    params: ParamsResource,
    artifacts: ArtifactStoreResource,
) -> pd.DataFrame:
    """GRPO vs GSPO vs SA-GCPO (without and with the group clip) at each synthetic share, the same seeds and
    budget for every cell: one row per run, plus the SFT reference row; metadata has the mean ± std over seeds."""
    settings = params.settings
    rl, cmp = settings.rl, settings.rl.comparison
    experiment = rl_experiment(sft_model, reward_model, training_examples, item_semantic_ids, settings)
    before = experiment.before
    seeds = cmp.seeds or [experiment.seed]
    base = rl_run(rl, experiment.seed).replace(
        steps=cmp.steps or rl.steps, ppo_epochs=cmp.ppo_epochs or rl.ppo_epochs, **({} if cmp.lr is None else {"lr": cmp.lr}))
    # sagcpo_gc's target on the scale of the reward it clips (learned + verifiable): the SFT policy's mean
    group_clip = experiment.sft_reward(base) if cmp.group_clip is None else cmp.group_clip
    table = compare_algorithms(experiment, base, cmp.algorithms, cmp.synthetic_shares, seeds, group_clip=group_clip,
                               resamples=settings.gate.resamples,
                               log=lambda label: step_logger(context.log.info, label))
    summary = comparison_summary(table)
    plot_path = artifacts.asset_dir("rl_comparison") / "comparison.png"
    plot = errorbar_panels(summary[summary["algorithm"] != "sft"], "synthetic_share", "algorithm",
                           {"mean reward (validation prompts)": ("reward", before["reward"]),
                            "validation HR@10": ("hr@10", before["hr10"])}, path=plot_path)
    context.add_output_metadata({
        "summary": md(summary),
        "table": md(table.drop(columns=["status"]).assign(status=table["status"].str[:40])),
        "plot": plot,
        "plot_path": str(plot_path),
        "budget": MetadataValue.json({"steps": cmp.steps or rl.steps, "group_size": rl.group_size,
                                      "prompts_per_step": rl.prompts_per_step, "seeds": seeds,
                                      "lr": base.lr, "ppo_epochs": base.ppo_epochs,
                                      "group_clip": group_clip, "reward_mix": dataclasses.asdict(base.mix),
                                      "group_sampling": base.group_sampling}),
    })
    return table
