"""evaluate_generator / evaluate_baselines against hand-computed metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import models.eval.generative as generative
from models.decoding import constrained_beam_search
from models.eval import cases as cases_mod
from models.eval.generative import evaluate_baselines, evaluate_generator
from models.eval.metrics import ranking_metrics
from models.eval.split import IdEncoder
from models.features.example_encoder import ExampleEncoder
from models.nn import GeneratorConfig, OxygenGenerator
from models.nn.sasrec import SASRec, SASRecConfig
from models.semantic_ids.trie import SIDTrie
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame

TINY = GeneratorConfig(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, igr_top_k=4, igr_dim=16, igr_hidden=32,
                       dropout=0.0)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def setup(n_items: int = 24, n_users: int = 6):
    table = make_catalog(n_items)
    frame = make_frame(table, n_users=n_users)
    enc = ExampleEncoder.fit(frame[frame.split == "train"], table, SCENARIOS)
    model = OxygenGenerator(enc.generator_config(TINY)).eval()
    return table, frame, enc, model, SIDTrie.from_codes(table.codes, table.vocab_sizes)


def test_metrics_hand_computed_with_stub_beam(monkeypatch):
    table, frame, enc, model, trie = setup()
    batch = enc.encode(frame.iloc[:4])
    batch["target_item"] = torch.tensor([0, 1, 2, 3])
    batch["scenario"] = torch.tensor([0, 0, 1, 1])
    # target ranks: 0, 2, absent, 9 (unfilled slot -1 never matches)
    ranked = torch.tensor([
        [0, 5, 6, 7, 8, 9, 10, 11, 12, 13],
        [5, 6, 1, 7, 8, 9, 10, 11, 12, 13],
        [5, 6, 7, 8, 9, 10, 11, 12, 13, -1],
        [5, 6, 7, 8, 9, 10, 11, 12, 13, 3],
    ])
    calls = []

    def fake_beam(m, b, t, beam_width, top_k):
        calls.append((b["scenario"].shape[0], beam_width, top_k))
        start = sum(c[0] for c in calls[:-1])
        return ranked[start : start + b["scenario"].shape[0]], torch.zeros(b["scenario"].shape[0], top_k)

    monkeypatch.setattr(generative, "constrained_beam_search", fake_beam)
    overall, table_s = evaluate_generator(model, batch, trie, table, beam_width=20, batch_size=3,
                                          scenario_names=SCENARIOS)
    assert calls == [(3, 20, 10), (1, 20, 10)]  # chunks of batch_size, top_k = max(ks)
    assert overall["hr@1"] == pytest.approx(0.25)
    assert overall["hr@5"] == pytest.approx(0.5)
    assert overall["hr@10"] == pytest.approx(0.75)
    assert overall["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert overall["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 4)
    assert overall["n"] == 4 and overall["n_unknown_targets"] == 0
    by = table_s.set_index("group")
    assert by.loc["home", "hr@5"] == pytest.approx(1.0) and by.loc["search", "hr@5"] == pytest.approx(0.0)
    assert by.loc["search", "hr@10"] == pytest.approx(0.5) and by.loc["overall", "n"] == 4


def test_tiny_catalog_every_item_is_listed():
    # 8 items <= top 10: beam search returns the whole catalog, so HR@10 = 1 for any model
    table, frame, enc, model, trie = setup(n_items=8)
    overall, by = evaluate_generator(model, enc.encode(frame), trie, table, beam_width=10)
    assert overall["hr@10"] == pytest.approx(1.0) and overall["n"] == len(frame)
    assert set(by["group"]) == {"0", "1", "overall"}  # no names given: scenario ids


def test_matches_direct_beam_search_and_cold_users_get_items():
    table, frame, enc, model, trie = setup()
    batch = enc.encode(frame)
    overall, _ = evaluate_generator(model, batch, trie, table, beam_width=12, batch_size=7)
    items, _ = constrained_beam_search(model, batch, trie, 12, top_k=10)
    direct = ranking_metrics(items, batch["target_item"], (1, 5, 10))
    assert all(overall[k] == pytest.approx(v) for k, v in direct.items())

    cold = frame.iloc[:3].assign(profile_fields=[None] * 3, short_sids=[[]] * 3, long_item_ids=[None] * 3,
                                 instruction_embedding=[None] * 3, has_instruction=False)
    cb = enc.encode(cold)
    assert not cb["short_mask"].any() and not cb["has_instruction"].any()
    items, scores = constrained_beam_search(model, cb, trie, 12, top_k=10)
    assert (items >= 0).all() and torch.isfinite(scores).all()
    assert all(len(set(r)) == 10 for r in items.tolist())
    res, _ = evaluate_generator(model, cb, trie, table, beam_width=12)
    assert res["n"] == 3


def test_evaluate_generator_rejects_bad_input():
    table, frame, enc, model, trie = setup()
    with pytest.raises(ValueError, match="beam_width"):
        evaluate_generator(model, enc.encode(frame), trie, table, ks=(1, 50), beam_width=20)
    with pytest.raises(ValueError, match="trie has 24 items but the SID table has 8"):
        evaluate_generator(model, enc.encode(frame), trie, make_catalog(8))


def test_popularity_baselines_hand_computed():
    table = make_catalog()
    train = pd.DataFrame({"item_id": ["i03"] * 3 + ["i01"] * 2 + ["i02"] + ["i07"] * 4 + ["unknown"],
                          "scenario": ["home"] * 6 + ["search"] * 4 + ["home"]})
    test = pd.DataFrame({"item_id": ["i03", "i07", "i01", "nope"], "scenario": ["home", "search", "home", "home"]})
    res = evaluate_baselines(train, test, table, ks=(1, 2, 3))
    # global order: i07 (4), i03 (3), i01 (2), i02 (1) ...; home: i03, i01, i02; search: i07
    g, _ = res["popularity"]
    assert g["hr@1"] == pytest.approx(1 / 4) and g["hr@2"] == pytest.approx(2 / 4) and g["hr@3"] == pytest.approx(3 / 4)
    assert g["n_train_unknown_items"] == 1
    s, by = res["popularity_per_scenario"]
    assert s["hr@1"] == pytest.approx(2 / 4) and s["hr@2"] == pytest.approx(3 / 4)
    assert s["ndcg@2"] == pytest.approx((1 + 1 + 1 / math.log2(3)) / 4)
    assert by.set_index("group").loc["search", "hr@1"] == pytest.approx(1.0)


def test_sasrec_baseline_runs_in_the_catalog_item_space():
    table = make_catalog()
    frame = make_frame(table, n_users=4)
    enc = IdEncoder(ids=np.sort(table.item_ids), offset=1)
    torch.manual_seed(0)
    sasrec = SASRec(enc.n_ids, SASRecConfig(hidden=16, n_blocks=1, max_len=10))
    test = frame[frame.split == "test"]
    res = evaluate_baselines(frame[frame.split == "train"], test, table, sasrec=sasrec, sasrec_encoder=enc)
    overall, by = res["sasrec"]
    ranked = sasrec.recommend([enc.encode(h) for h in test["long_item_ids"]], 10)
    want = ranking_metrics(ranked, enc.encode(test["item_id"].to_numpy()), (1, 5, 10))
    assert all(overall[k] == pytest.approx(v) for k, v in want.items())
    with pytest.raises(ValueError, match="sasrec_encoder"):
        evaluate_baselines(frame, test, table, sasrec=sasrec)


def test_log_without_drops_exactly_the_held_out_targets():
    log = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "y", "x", "x"],
                        "timestamp": [1, 2, 3, 2], "scenario": ["s"] * 4})
    held = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "target_timestamp": [3, 2]})
    out = generative.log_without(log, held)
    # (a, x, 3) is held out; (b, y, 2) matches no interaction; (a, x, 1) is an earlier purchase and stays
    assert list(zip(out.user_id, out.item_id, out.timestamp)) == [("a", "x", 1), ("a", "y", 2), ("b", "x", 2)]


def test_compare_models_scores_every_model_on_the_same_examples():
    table, frame, enc, model, trie = setup()
    test = frame[frame.split == "test"].reset_index(drop=True)
    train_log = frame[frame.split == "train"].rename(columns={"target_timestamp": "timestamp"})
    cases = generative.compare_models({"gen": (model, enc.encode(test))}, test, train_log, trie, table,
                                      beam_width=10, scenario_names=enc.scenarios)
    assert list(cases.columns) == list(cases_mod.CASE_COLUMNS)
    assert set(cases["model"]) == {"gen", "popularity", "popularity_per_scenario"}
    per_model = cases.groupby("model")
    assert set(per_model.size()) == {len(test)}  # every model on every example, in the same order
    assert all((g["example"].to_numpy() == np.arange(len(test))).all() for _, g in per_model)
    out = cases_mod.summary_table(cases)
    overall = out[out["group"] == "overall"].set_index("model")
    # the cases reproduce evaluate_generator / evaluate_baselines exactly
    gen, _ = evaluate_generator(model, enc.encode(test), trie, table, beam_width=10)
    pop = evaluate_baselines(train_log, test, table)
    for name, want in (("gen", gen), ("popularity", pop["popularity"][0]),
                       ("popularity_per_scenario", pop["popularity_per_scenario"][0])):
        assert all(overall.loc[name, m] == pytest.approx(want[m]) for m in ("hr@1", "hr@10", "ndcg@5", "ndcg@10"))
        assert overall.loc[name, "n"] == len(test)
    assert list(out.columns[:3]) == ["model", "group", "n"]


def test_compare_models_refuses_examples_in_another_order():
    table, frame, enc, model, trie = setup()
    test = frame[frame.split == "test"].reset_index(drop=True)
    train_log = frame[frame.split == "train"].rename(columns={"target_timestamp": "timestamp"})
    shuffled = test.iloc[::-1].reset_index(drop=True)
    if (shuffled["item_id"].to_numpy() == test["item_id"].to_numpy()).all():
        pytest.fail("fixture needs distinct targets")
    with pytest.raises(ValueError, match="frame's order"):
        generative.compare_models({"gen": (model, enc.encode(shuffled))}, test, train_log, trie, table, beam_width=10)
