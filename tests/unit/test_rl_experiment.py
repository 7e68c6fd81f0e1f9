"""RLExperiment (models/rl/experiment.py): one SFT model, its reward and examples; RL runs measured against it on
every validation and test example, paired."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from models.eval.metrics import rank_metrics
from models.features.example_encoder import ExampleEncoder
from models.lightning.train import save_generator
from models.nn import GeneratorConfig, OxygenGenerator
from models.rl import RewardModel, RewardModelConfig, save_reward_model
from models.rl.experiment import RLExperiment, RLRun, measure, paired_differences, seed_summary
from models.rl.generator_policy import mapping_for_scenarios
from models.rl.verifiable import RewardMix
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame

pytestmark = pytest.mark.usefixtures("one_thread")
ITEM_DIM = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny SFT model (random init), its encoder, a random reward model and item features, on disk."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rl_experiment")
    table = make_catalog(24)
    frame = make_frame(table, n_users=12, n_events=6)
    encoder = ExampleEncoder.fit(frame[frame["split"] == "train"], table, SCENARIOS)
    encoder_path = encoder.save(root / "encoder.json")
    cfg = encoder.generator_config(GeneratorConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, igr_top_k=2,
                                                   igr_dim=8, igr_hidden=16, dropout=0.0, seed=0))
    checkpoint = save_generator(OxygenGenerator(cfg), root / "sft.pt")
    reward_net = RewardModel(RewardModelConfig(user_dim=cfg.instruction_dim + ITEM_DIM, item_dim=ITEM_DIM,
                                               num_scenarios=len(encoder.scenarios), hidden_dim=16, seed=0))
    features = root / "item_features.npy"
    np.save(features, np.random.default_rng(0).standard_normal((len(table.item_ids), ITEM_DIM)).astype(np.float32))
    save_reward_model(reward_net, root / "reward.pt")
    reward_model = {"checkpoint": str(root / "reward.pt"), "item_features": str(features),
                    "scenarios": list(encoder.scenarios), "codebook_version": table.codebook_version}
    mapping = mapping_for_scenarios(encoder.scenarios, {}, {"click": 1.0, "cart": 0.5, "order": 0.5})
    args = (str(checkpoint), str(encoder_path), reward_model, mapping, frame, table.to_frame())
    yield args, frame
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def experiment(world):
    args, _ = world
    return RLExperiment(*args, seed=0, beam_width=10, eval_group_size=4)


FAST = RLRun(steps=4, lr=3e-3, beta=0.0, group_size=4, prompts_per_step=8, synthetic_share=0.0,
             mix=RewardMix(learned_weight=0.0, verifiable_weight=1.0, prefix_credit=0.3, rank_penalty=0.0))


def test_sft_is_scored_on_every_validation_and_test_example(experiment, world):
    _, frame = world
    before = experiment.before
    cases = before["cases"]
    for split in ("valid", "test"):
        part = cases[cases["split"] == split]
        assert part["example"].tolist() == list(range(int((frame["split"] == split).sum())))
        assert part["user_id"].tolist() == frame.loc[frame["split"] == split, "user_id"].tolist()
    valid = cases[cases["split"] == "valid"]["rank"].to_numpy(np.float64)
    assert before["hr10"] == pytest.approx(float(rank_metrics(valid, [10])["hr@10"].mean()))
    assert before["kl"] == 0.0  # the SFT model against itself
    assert 0.0 <= before["history_overlap"] <= 1.0 and 0.0 <= before["reward_at10"] <= 2.0  # weights sum to 2
    assert "reward" in before["table"].columns and "overall" in set(before["table"]["group"])
    assert experiment.before is before  # computed once


def test_a_run_is_measured_against_its_sft_model_paired(experiment):
    row = measure(experiment, FAST, resamples=50)
    assert row["status"] == "steps_done" and row["steps"] == FAST.steps
    for split in ("valid", "test"):
        for metric in ("ndcg@10", "hr@10"):
            key = f"{split}_{metric}"
            assert row[f"{key}_diff"] == pytest.approx(row[f"{key}_rl"] - row[f"{key}_sft"])
            assert row[f"{key}_low"] <= row[f"{key}_diff"] + 1e-12 <= row[f"{key}_high"] + 2e-12
    assert row["kl_valid"] > 0  # lr 3e-3 moved the policy away from the SFT model
    assert 0.0 <= row["group_hit_share"] <= 1.0 and np.isfinite(row["clip_frac"])
    assert row["reward_sft"] == experiment.before["reward"]


def test_training_does_not_touch_the_sft_model_and_is_seeded(experiment):
    sft = {k: v.clone() for k, v in experiment.sft.state_dict().items()}
    a, history_a = experiment.train(FAST)
    b, history_b = experiment.train(FAST)
    c, _ = experiment.train(FAST.replace(seed=1))
    assert all(torch.equal(v, experiment.sft.state_dict()[k]) for k, v in sft.items())
    assert history_a == history_b and all("group_hit_share" in h and "reward_learned" in h for h in history_a)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_the_verifiable_reward_raises_the_logged_items_probability_on_training_prompts(experiment):
    prompts = {k: v for k, v in experiment.train_prompts.items() if k not in ("target_sids", "target_item")}
    targets = experiment.train_prompts["target_sids"][:, None, :]

    @torch.no_grad()
    def target_logp(model) -> float:
        return float(experiment.policy(model).log_probs(prompts, targets).sum(-1).mean())

    policy, _ = experiment.train(FAST.replace(steps=10, group_sampling="beam"))
    assert target_logp(policy.model) > target_logp(experiment.sft) + 0.1


def test_identical_models_have_zero_paired_differences(experiment):
    before = experiment.before
    rows = paired_differences(before, before, resamples=20)
    assert {(r["split"], r["metric"]) for r in rows} == {(s, m) for s in ("valid", "test") for m in ("ndcg@10", "hr@10")}
    assert all(r["difference"] == r["low"] == r["high"] == 0.0 for r in rows)


def test_group_clip_is_the_sft_reward_on_the_runs_scale(experiment):
    verif = experiment.sft_reward(FAST)
    learned = experiment.sft_reward(FAST.replace(learned_weight=1.0, verifiable_weight=0.0))
    assert 0.0 <= verif <= 1.0 and 0.0 < learned < 2.0  # a hit is worth 1; the learned part: weights sum to 2
    assert experiment.sft_reward(FAST) == verif  # seeded


def test_run_fields_and_bad_inputs(world):
    run = RLRun().replace(learned_weight=0.0, lr=1e-4, group_sampling="beam")
    assert run.mix.learned_weight == 0.0 and run.lr == 1e-4 and run.rl_config().lr == 1e-4
    assert run.to_dict()["learned_weight"] == 0.0 and "mix" not in run.to_dict()
    with pytest.raises(ValueError, match="unknown RLRun field"):
        RLRun().replace(learning_rate=1e-3)
    with pytest.raises(ValueError, match="group"):
        RLRun(group_sampling="top")
    with pytest.raises(ValueError, match="synthetic_share"):
        RLRun(synthetic_share=1.5)
    args, _ = world
    other = mapping_for_scenarios(["x", "y"], {}, {"click": 1.0})
    with pytest.raises(ValueError, match="mapping scenarios"):
        RLExperiment(*args[:3], other, *args[4:])
    bad_reward = dict(args[2], codebook_version="other")
    with pytest.raises(ValueError, match="codebook"):
        RLExperiment(args[0], args[1], bad_reward, *args[3:])


def test_seed_summary_means_and_stds_per_variant():
    rows = [{"variant": "a", "seed": s, "x": float(s), "status": "ok"} for s in range(3)] + [
        {"variant": "b", "seed": 0, "x": 5.0, "status": "ok"}]
    out = seed_summary(rows).set_index("variant")
    assert out.loc["a", "x_mean"] == 1.0 and out.loc["a", "x_std"] == pytest.approx(1.0) and out.loc["a", "runs"] == 3
    assert out.loc["b", "x_mean"] == 5.0 and np.isnan(out.loc["b", "x_std"])
    assert "seed_mean" not in out.columns and "status_mean" not in out.columns
    with pytest.raises(ValueError, match="no column"):
        seed_summary(rows, keys=("algorithm",))
    assert list(pd.DataFrame(rows).columns) == ["variant", "seed", "x", "status"]  # input untouched
    assert dataclasses.is_dataclass(FAST)


def test_algorithm_comparison_has_the_sft_row_first_and_one_row_per_run(experiment):
    from models.rl.experiment import compare_algorithms, comparison_summary

    lines = []
    table = compare_algorithms(experiment, FAST.replace(steps=2), ["grpo", "sagcpo_gc"], [0.0], [0, 1],
                               group_clip=0.5, resamples=20, log=lambda label: lambda rec: lines.append(label))
    assert table["algorithm"].tolist() == ["sft", "grpo", "grpo", "sagcpo_gc", "sagcpo_gc"]
    sft = table.iloc[0]
    assert sft["status"] == "reference" and sft["hr@10"] == experiment.before["hr10"]
    runs = table.iloc[1:]
    assert (runs["reward_gain"] == runs["reward"] - experiment.before["reward"]).all()
    assert runs["seed"].tolist() == [0, 1, 0, 1] and set(runs["status"]) <= {"steps_done", "kl_stop"}
    assert "sagcpo_gc share=0.0 seed=1" in lines  # per-step progress is reported with the run's label
    summary = comparison_summary(table)
    assert summary.set_index("algorithm").loc["grpo", "runs"] == 2
    grpo = runs[runs["algorithm"] == "grpo"]
    assert summary.set_index("algorithm").loc["grpo", "reward_mean"] == pytest.approx(grpo["reward"].mean())
