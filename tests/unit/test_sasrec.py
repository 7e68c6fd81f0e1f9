"""SASRec: causality, padding invariance, learning a trivial rule, Lightning training determinism."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from models.eval.metrics import ranking_metrics
from models.eval.split import encode_ids, leave_last_out
from models.lightning.sasrec_module import SASRecModule, load_sasrec, train_sasrec, train_variants
from models.lightning.sequence_data import SequenceDataModule, train_tensors, train_windows
from models.nn.sasrec import SASRec, SASRecConfig, left_pad

# tiny tensors: one intra-op thread (the shared fixture in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = SASRecConfig(hidden=32, n_blocks=2, n_heads=2, max_len=12, dropout=0.0)


def _model(seed=0, cfg=SMALL, n_items=30):
    torch.manual_seed(seed)
    return SASRec(n_items, cfg).eval()


def test_causal_masking():
    model = _model()
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(1, 31, (4, 12), generator=g)
    changed = seqs.clone()
    changed[:, 7] = (changed[:, 7] % 30) + 1  # a different item at position 7
    with torch.no_grad():
        a, b = model(seqs), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)  # earlier positions untouched
    assert (a[:, 7:] - b[:, 7:]).abs().amax() > 1e-3  # later ones do depend on it


def test_padding_invariance():
    model = _model()
    seq = [3, 9, 4, 17, 5]
    with torch.no_grad():
        short = model(left_pad([seq], 5))[0]
        padded = model(left_pad([seq], 12))[0, -5:]
        # in a batch next to a longer sequence, padded to that length
        batch = model(left_pad([seq, list(range(1, 13))], 12))[0, -5:]
    torch.testing.assert_close(short, padded, rtol=0, atol=1e-5)
    torch.testing.assert_close(short, batch, rtol=0, atol=1e-5)
    assert torch.isfinite(model(left_pad([[], seq], 12))).all()  # all-padding rows give no NaN


def test_left_pad_keeps_last_items():
    out = left_pad([np.array([1, 2, 3, 4]), np.array([7])], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 7]]


def test_train_windows_train_every_target_once():
    s = np.arange(1, 8)  # 7 items
    inputs, targets, nxt = train_windows([s, np.array([9])], 3, None)
    assert inputs.tolist() == [[4, 5, 6]] and targets.tolist() == [[5, 6, 7]] and nxt is None  # last window only
    inputs, targets, nxt = train_windows([s], 3, 2, values=[s * 10])
    # windows of the last 4 items ending at 7, 5, 3 items; all but the earliest keep only their last 2 targets
    assert inputs.tolist() == [[4, 5, 6], [2, 3, 4], [0, 1, 2]]
    assert targets.tolist() == [[0, 6, 7], [0, 4, 5], [0, 2, 3]]
    assert nxt.tolist() == [[50, 60, 70], [30, 40, 50], [0, 20, 30]]  # the next event's value, 0 on padding
    t = train_tensors([s], 3, 2)
    assert t["inputs"].tolist() == inputs.tolist() and "scenarios" not in t
    # a stride above max_len acts as max_len: consecutive windows, nothing left out
    assert train_windows([s], 3, 10)[1].tolist() == train_windows([s], 3, 3)[1].tolist()


@pytest.mark.parametrize("stride", [1, 3, 7, 12])
def test_train_windows_property(stride):
    rng = np.random.default_rng(stride)
    # items unique over all sequences, so a target tells its sequence and position
    seqs = [1000 * i + 1 + rng.permutation(100)[: rng.integers(1, 40)] for i in range(30)]
    max_len = 12
    inputs, targets, _ = train_windows(seqs, max_len, stride)
    # every target of every sequence (items 2..n) carries loss exactly once
    expected = np.sort(np.concatenate([s[1:] for s in seqs]))
    assert np.array_equal(np.sort(targets[targets > 0]), expected)
    # inputs are a contiguous slice of the sequence; a target's input is the item before it
    has = targets > 0
    pos = np.nonzero(has)
    for w, c in zip(*pos):  # small test data: a loop is fine here
        seq = seqs[int(targets[w, c]) // 1000]
        j = int(np.nonzero(seq == targets[w, c])[0][0])
        assert inputs[w, c] == seq[j - 1]
        context = int((inputs[w, : c + 1] > 0).sum())
        assert context == j or context >= max_len + 1 - min(stride, max_len)  # whole prefix or >= L + 1 - stride


def _successor_sequences(n_items=20, n_seqs=64, length=12, seed=0):
    # item i is always followed by i % n_items + 1 (a cycle)
    starts = np.random.default_rng(seed).integers(0, n_items, n_seqs)
    return [(s + np.arange(length)) % n_items + 1 for s in starts]


def test_learns_next_item_rule():
    torch.manual_seed(0)
    cfg = SASRecConfig(hidden=32, n_blocks=1, n_heads=1, max_len=12, dropout=0.1)
    model = SASRec(20, cfg)
    t = train_tensors(_successor_sequences(), cfg.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.loss(t["inputs"], t["targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.5 and losses[-1] < 0.15 * losses[0]
    hist = _successor_sequences(n_seqs=32, length=6, seed=1)
    targets = np.array([h[-1] % 20 + 1 for h in hist])
    ranked = model.recommend(hist, 5)
    assert ranked.shape == (32, 5)
    assert ranking_metrics(ranked, targets, ks=(1,))["hr@1"] > 0.9
    assert model.training  # recommend restores the training mode


def test_recommend_excludes_full_history():
    model = _model()
    hist = [np.arange(1, 26), np.array([4])]  # first history is longer than max_len
    ranked = model.recommend(hist, 5, exclude_seen=True).numpy()
    assert set(ranked[0]) <= set(range(26, 31))
    assert 4 not in ranked[1] and 0 not in ranked[1]
    kept = model.recommend(hist, 29).numpy()
    assert 0 not in kept


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(hidden=30, n_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="max_len"):
        _model()(torch.ones(1, 13, dtype=torch.long))


def _tiny_split():
    rows = []
    for u, seq in enumerate(_successor_sequences(n_items=15, n_seqs=40, length=10, seed=3)):
        rows += [(f"u{u}", f"i{item}", t, "s0" if u % 2 else "s1") for t, item in enumerate(seq)]
    return leave_last_out(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "scenario"]))


def test_data_module_shapes():
    data = SequenceDataModule(_tiny_split(), max_len=8, batch_size=16, window_stride=None)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape == (16, 8) and batch["targets"].shape == (16, 8)
    # targets are the inputs shifted by one: targets[t] == inputs[t + 1] wherever there is a target
    has = batch["targets"][:, :-1] != 0
    assert torch.equal(batch["targets"][:, :-1][has], batch["inputs"][:, 1:][has])
    assert (batch["inputs"][:, 0] == 0).all()  # 8 train items -> 7 inputs, left-padded to 8
    val = next(iter(data.val_dataloader()))
    assert (val["targets"][:, :-1] == 0).all() and (val["targets"][:, -1] > 0).all()
    assert val["seen"].shape == (40, 8)  # full train history: 10 - 2 items


def test_lightning_training_is_deterministic(tmp_path):
    split = _tiny_split()
    cfg = SASRecConfig(hidden=16, n_blocks=1, max_len=8, batch_size=16, dropout=0.2, seed=7, patience=5)
    _, m1 = train_sasrec(split, cfg, max_epochs=2, default_root_dir=tmp_path / "a")
    model, m2 = train_sasrec(split, cfg, max_epochs=2, default_root_dir=tmp_path / "b")
    timing = {"train_seconds", "seconds_per_epoch"}
    for key in m1:
        if key == "curve":
            strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in m["curve"]] for m in (m1, m2)]
            assert strip[0] == strip[1]
        elif key not in timing:
            assert m1[key] == m2[key], key
    assert m1["epochs"] == 2 and "test/ndcg@10" in m1 and "test_excl_seen/hr@10" in m1
    # targets never repeat a history item here, so dropping seen items can only move them up
    for k in (1, 5, 10):
        assert m1[f"test_excl_seen/hr@{k}"] >= m1[f"test/hr@{k}"]
    # the checkpoint restores with weights_only=True and gives the same model
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "best.ckpt", weights_only=True)
    module = SASRecModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    seqs = torch.randint(1, 16, (3, 8))
    with torch.no_grad():
        torch.testing.assert_close(module.model.eval()(seqs), model.eval()(seqs))


def test_saved_sasrec_round_trips_with_its_ids_and_rejects_bad_files(tmp_path):
    from models.eval.split import encode_ids
    from models.lightning.sasrec_module import load_sasrec, save_sasrec

    encoder = encode_ids(np.array([f"i{i}" for i in range(9)], dtype=object))
    model = SASRec(encoder.n_ids, SMALL).eval()
    path = save_sasrec(model, encoder, tmp_path / "sasrec.pt")
    loaded, ids = load_sasrec(path)
    seqs = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]])
    assert torch.allclose(model.last_scores(seqs), loaded.last_scores(seqs))
    assert list(ids.ids) == list(encoder.ids) and loaded.config == SMALL
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_sasrec(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a SASRec weights file"):
        load_sasrec(tmp_path / "other.pt")


# ------------------------------------------------------------------------------------ scenario-aware variant
AWARE = SASRecConfig(hidden=32, n_blocks=1, n_heads=1, max_len=12, dropout=0.0, scenario_aware=True)


def _aware(seed=0):
    torch.manual_seed(seed)
    return SASRec(30, AWARE, scenarios=["cart", "feed", "search"]).eval()


def test_scenario_changes_the_scores_of_the_aware_model_only():
    model = _aware()
    hist = [np.array([3, 9, 4, 17]), np.array([5, 2])]
    hist_scen = [np.array(["feed", "feed", "cart", "feed"]), np.array(["search", "cart"])]
    seqs = left_pad(hist, 12)
    a = model.last_scores(seqs, left_pad([model.encode_scenarios(np.append(h[1:], "feed")) for h in hist_scen], 12))
    b = model.last_scores(seqs, left_pad([model.encode_scenarios(np.append(h[1:], "cart")) for h in hist_scen], 12))
    assert (a - b)[:, 1:].abs().amax() > 1e-3  # another request scenario, other scores
    # recommend builds the same next-event scenarios from names: request last, history shifted by one
    ranked = model.recommend(hist, 29, scenarios=["feed", "feed"], history_scenarios=hist_scen)
    assert torch.equal(ranked, top_k_of(a, 29))
    ranked_cart = model.recommend(hist, 29, scenarios=["cart", "cart"], history_scenarios=hist_scen)
    assert not torch.equal(ranked, ranked_cart)
    # the plain model ignores scenarios
    plain = _model()
    assert torch.equal(plain.recommend(hist, 10), plain.recommend(hist, 10, scenarios=["x", "y"], history_scenarios=[[1], [2]]))


def top_k_of(scores, k):
    from models.eval.metrics import top_k

    return top_k(scores, k)


def test_scenario_inputs_are_validated():
    model = _aware()
    hist = [np.array([3, 9, 4])]
    with pytest.raises(ValueError, match="unknown scenario.*'home'"):
        model.recommend(hist, 5, scenarios=["home"], history_scenarios=[["feed"] * 3])
    with pytest.raises(ValueError, match="unknown scenario"):
        model.recommend(hist, 5, scenarios=["feed"], history_scenarios=[["feed", "nope", "cart"]])
    with pytest.raises(ValueError, match="history_scenarios"):
        model.recommend(hist, 5, scenarios=["feed"])
    with pytest.raises(ValueError, match="2 entries for a history of 3"):
        model.recommend(hist, 5, scenarios=["feed"], history_scenarios=[["feed", "cart"]])
    with pytest.raises(ValueError, match="scenario of every input position"):
        model(left_pad(hist, 12))
    with pytest.raises(ValueError, match="scenario names"):
        SASRec(30, AWARE)
    with pytest.raises(ValueError, match="plain SASRec"):
        SASRec(30, SMALL, scenarios=["a"])


def test_data_module_carries_next_event_scenarios():
    split = _tiny_split()
    from models.lightning.sasrec_module import split_scenarios

    scen = split_scenarios(split)
    assert list(scen.ids) == ["s0", "s1"]
    data = SequenceDataModule(split, max_len=8, batch_size=64, window_stride=None, scenario_encoder=scen)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    real = batch["inputs"] != 0
    assert torch.equal(batch["scenarios"] != 0, real)  # a scenario exactly where there is an input item
    val = next(iter(data.val_dataloader()))
    cases = split.eval_cases("valid")
    # the last position holds the held-out event's scenario
    assert val["scenarios"][:, -1].tolist() == scen.encode(cases.scenarios.astype(str)).tolist()
    # earlier positions the next history event's
    assert val["scenarios"][0, -2].item() == scen.encode([str(cases.history_scenarios[0][-1])])[0]


def _scenario_rule_split(n_users=150):
    # the next item depends on the scenario it happens in: s0 -> item + 1, s1 -> item + 2 (mod 20)
    rows, rng = [], np.random.default_rng(0)
    for u in range(n_users):
        item = int(rng.integers(1, 20))
        for t in range(12):
            scen = "s0" if rng.random() < 0.5 else "s1"
            item = (item + (1 if scen == "s0" else 2) - 1) % 20 + 1
            rows.append((f"u{u}", f"i{item}", t, scen))
    return leave_last_out(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "scenario"]))


def test_scenario_aware_training_logs_and_round_trips(tmp_path):
    from dataclasses import replace

    from models.lightning.sasrec_module import load_sasrec, save_sasrec

    split = _scenario_rule_split()
    cfg = SASRecConfig(hidden=32, n_blocks=1, max_len=10, batch_size=32, dropout=0.0, lr=1e-2, seed=0, patience=5,
                       max_epochs=30, scenario_aware=True)
    lines = []
    model, m = train_sasrec(split, cfg, default_root_dir=tmp_path / "aware", log=lines.append)
    _, plain = train_sasrec(split, replace(cfg, scenario_aware=False), default_root_dir=tmp_path / "plain")
    # the request's scenario decides between two next items: only the aware model can know which
    assert m["test/hr@1"] > 0.9 and plain["test/hr@1"] < 0.65, (m["test/hr@1"], plain["test/hr@1"])
    assert model.scenarios == ("s0", "s1")
    # one log line and one curve row per epoch
    assert len(lines) == len(m["curve"]) == m["epochs"]
    assert lines[0].startswith("sasrec epoch 0: train loss") and "val HR@10" in lines[0]
    assert [r["epoch"] for r in m["curve"]] == list(range(m["epochs"]))
    assert all({"train/loss", "val/ndcg@10", "val/hr@10", "seconds"} <= set(r) for r in m["curve"])
    assert m["stopped_early"] == (m["epochs"] < cfg.max_epochs)
    # save/load keeps the scenario vocabulary with the weights
    encoder = encode_ids(split.items)
    loaded, ids = load_sasrec(save_sasrec(model, encoder, tmp_path / "aware.pt"))
    assert loaded.scenarios == model.scenarios and loaded.config == cfg and list(ids.ids) == list(encoder.ids)
    cases = split.eval_cases("test")
    hist = [encoder.encode(h) for h in cases.histories]
    kw = {"scenarios": cases.scenarios, "history_scenarios": cases.history_scenarios}
    assert torch.equal(model.recommend(hist, 10, **kw), loaded.recommend(hist, 10, **kw))
    with pytest.raises(ValueError, match="unknown scenario"):
        loaded.recommend(hist[:1], 10, scenarios=["s9"], history_scenarios=cases.history_scenarios[:1])


def test_train_variants_fits_each_from_scratch_and_saves_loadable_weights(tmp_path):
    split = _tiny_split()
    base = SASRecConfig(hidden=16, n_blocks=1, max_len=8, batch_size=16, seed=1, patience=5, max_epochs=2)
    configs = {"sasrec": base, "sasrec_scenario": dataclasses.replace(base, scenario_aware=True)}
    (tmp_path / "sasrec" / "checkpoints").mkdir(parents=True)
    (tmp_path / "sasrec" / "checkpoints" / "stale.ckpt").write_text("old")  # never picked up
    variants, rows, curves = train_variants(split, configs, tmp_path)
    assert list(rows["variant"]) == ["sasrec", "sasrec_scenario"] and (rows["epochs"] == 2).all()
    assert not (tmp_path / "sasrec" / "checkpoints" / "stale.ckpt").exists()
    for name in configs:
        model, encoder = load_sasrec(variants[name]["weights"])
        assert len(curves[name]) == 2 and encoder.n_ids == model.n_items
        row = rows.set_index("variant").loc[name]
        assert variants[name]["metrics"]["test/hr@10"] == pytest.approx(row["test/hr@10"], abs=1e-4)
    assert list(load_sasrec(variants["sasrec_scenario"]["weights"])[0].scenarios) == ["s0", "s1"]
