"""SFT ablations: the variants of each study, shared training of identical configs, the summary table."""

from __future__ import annotations

import dataclasses

import pytest

from models.lightning.ablations import STUDIES, ablation_variants, run_ablations, summary_table
from models.lightning.train import SFTConfig
from models.nn import GeneratorConfig
from models.nn.config import INSTRUCTION_POSITIONS
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame

TINY = GeneratorConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, igr_top_k=4, igr_dim=8, igr_hidden=16,
                       dropout=0.0, q2i_weight=0.1)
SFT = SFTConfig(max_epochs=1, batch_size=16, eval_batch_size=32, warmup_steps=1, beam_width=10,
                enable_progress_bar=False, limit_train_batches=2, limit_val_batches=1)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def test_variants_cover_each_table():
    variants = ablation_variants(TINY, STUDIES, SCENARIOS[:2])
    by_study = {s: [v for v in variants if v.study == s] for s in STUDIES}
    assert [v.generator.instruction_position for v in by_study["instruction_position"]] == list(INSTRUCTION_POSITIONS)
    igr = {v.name: (v.generator.use_igr, v.generator.q2i_weight) for v in by_study["igr_q2i"]}
    assert igr == {"no_igr_no_q2i": (False, 0.0), "igr_only": (True, 0.0), "igr_q2i": (True, 0.1)}
    recent = {v.name: v.generator.n_recent for v in by_study["recent_context"]}
    assert recent == {"no_recent": 0, "recent": min(10, TINY.max_long)}
    scen = by_study["unified_vs_per_scenario"]
    assert [(v.name, v.scenario) for v in scen] == [("unified", None)] + [("per_scenario", s) for s in SCENARIOS[:2]]
    # the base config is one training run however often it appears
    base_keys = {v.key for v in variants if v.generator == TINY and v.scenario is None}
    assert len(base_keys) == 1
    with pytest.raises(ValueError, match="unknown ablation studies"):
        ablation_variants(TINY, ["table_99"], SCENARIOS)


def two_scenario_frame(table, n_users):
    """make_frame with one scenario per user, so each scenario has train, valid and test examples."""
    frame = make_frame(table, n_users=n_users)
    frame["scenario"] = [SCENARIOS[int(u[1:]) % 2] for u in frame["user_id"]]
    return frame


def test_run_trains_shared_configs_once_and_scores_every_variant(tmp_path):
    table = make_catalog()
    frame = two_scenario_frame(table, n_users=16)
    logs = []
    results = run_ablations(frame, table, SCENARIOS, TINY, SFT, ["igr_q2i", "unified_vs_per_scenario"], tmp_path,
                            log=logs.append)
    # 3 IGR variants (the last is the base) + 2 per-scenario models; "unified" reuses the base run
    assert len(logs) == 5 and len(list(tmp_path.iterdir())) == 5
    per = results[results["variant"] == "per_scenario"]
    assert set(per["group"]) == set(SCENARIOS[:2])  # a per-scenario model is scored on its scenario only
    summary = summary_table(results).set_index(["study", "variant"])
    n_test = int((frame["split"] == "test").sum())
    assert (summary["n"] == n_test).all()  # every variant is scored on the same test examples
    assert summary.loc[("igr_q2i", "igr_q2i"), "hr@10"] == pytest.approx(
        summary.loc[("unified_vs_per_scenario", "unified"), "hr@10"])
    assert ((summary["hr@10"] >= 0) & (summary["hr@10"] <= 1)).all()


def test_a_scenario_without_train_examples_is_a_clear_error(tmp_path):
    table = make_catalog()
    frame = two_scenario_frame(table, n_users=4)
    frame.loc[(frame["scenario"] == SCENARIOS[1]) & (frame["split"] == "train"), "split"] = "valid"  # has test
    with pytest.raises(ValueError, match=f"per_scenario \\({SCENARIOS[1]}\\): no train or test examples"):
        run_ablations(frame, table, SCENARIOS, TINY, SFT, ["unified_vs_per_scenario"], tmp_path)
    with pytest.raises(ValueError, match="'split' column"):
        run_ablations(frame.drop(columns="split"), table, SCENARIOS, TINY, SFT, ["igr_q2i"], tmp_path)
