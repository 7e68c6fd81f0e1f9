"""One RL post-training run (models/rl/post_training.py): saved policy and cases, the paired gate, the serving
choice, and the last good policy on a fault."""

import math

import pandas as pd
import pytest

from models.lightning.train import load_generator
from models.rl import RLTrainingError
from models.rl.post_training import RL, SFT, GateOptions, post_train, serving_choice
from tests.unit.test_rl_experiment import FAST, experiment, world  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_post_train_saves_gates_and_records(experiment, tmp_path):  # noqa: F811
    out = post_train(experiment, FAST, tmp_path / "run", GateOptions(resamples=200))
    assert load_generator(out.checkpoint).cfg.to_dict() == out.config
    cases = pd.read_parquet(out.cases_path)
    assert set(cases["model"]) == {SFT, RL} and set(cases["split"]) == {"valid", "test"}
    assert (cases["model"] == RL).sum() == (cases["model"] == SFT).sum()
    summary = out.summary()
    assert summary["steps"] == len(out.history) == FAST.steps and summary["algorithm"] == FAST.algorithm
    assert summary["val_hr10_sft"] == experiment.before["hr10"]
    intervals = out.intervals()
    assert list(intervals["metric"]) == ["ndcg@10", "hr@10"] and (intervals["low"] <= intervals["high"]).all()
    record = out.record({"checkpoint": "sft.pt", "encoder": "encoder.json"})
    assert record["sft_checkpoint"] == "sft.pt" and record["cases"] == str(out.cases_path)

    sft_model = {"checkpoint": "sft.pt", "encoder": "encoder.json", "generator_config": {}}
    # margin 1 lets any RL policy through; with margin 0 the data decides
    chosen, table = serving_choice(sft_model, record, GateOptions(margin=1.0, resamples=200))
    assert chosen["served"] == RL and chosen["checkpoint"] == str(out.checkpoint)
    strict, _ = serving_choice(sft_model, record, GateOptions(margin=0.0, resamples=200))
    lows = [c["low"] for c in strict["valid_intervals"]]
    assert strict["served"] == (RL if min(lows) >= 0 else SFT)
    assert strict["checkpoint"] == (str(out.checkpoint) if strict["served"] == RL else "sft.pt")
    assert set(table["model"]) == {SFT, RL}


def test_a_fault_saves_the_last_good_policy(experiment, tmp_path):  # noqa: F811
    diverging = FAST.replace(lr=math.inf)
    with pytest.raises(RLTrainingError) as info:
        post_train(experiment, diverging, tmp_path / "run", GateOptions(resamples=200))
    assert info.value.last_good.is_file()
    assert not (tmp_path / "run" / "policy.pt").exists() and not (tmp_path / "run" / "cases.parquet").exists()
