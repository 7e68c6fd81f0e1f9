"""Unified ranking reward model (models/rl/reward_model.py) and reward mapping (models/rl/reward_mapping.py)."""
import copy

import numpy as np
import pytest
import torch

from models.rl.reward_mapping import RewardMappingConfig, UnifiedReward, diversity_share, map_rewards
from models.rl.reward_model import (
    RewardModelConfig,
    build_reward_data,
    calibrate,
    evaluate,
    load_reward_model,
    log_loss,
    roc_auc,
    save_reward_model,
    train_reward_model,
)

D, S = 8, 3


def synthetic_log(seed=0, n_users=400, n_items=300, n=8000):
    """Impressions whose click probability is sigmoid(3 u.v / sqrt(D) - 1 + scenario bias)."""
    rng = np.random.default_rng(seed)
    lu, li = rng.normal(size=(n_users, D)), rng.normal(size=(n_items, D))
    uf = (lu + 0.2 * rng.normal(size=lu.shape)).astype(np.float32)  # observed features are noisy latents
    itf = (li + 0.2 * rng.normal(size=li.shape)).astype(np.float32)
    u, it, s = rng.integers(0, n_users, n), rng.integers(0, n_items, n), rng.integers(0, S, n)
    logit = 3.0 * (lu[u] * li[it]).sum(1) / np.sqrt(D) - 1.0 + np.array([0.0, -0.5, 0.5])[s]
    click = rng.random(n) < 1 / (1 + np.exp(-logit))
    cart = click & (rng.random(n) < 0.4)
    order = cart & (rng.random(n) < 0.5)
    return uf, itf, u, it, s, np.stack([click, cart, order], 1).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small matmuls: 2 intra-op threads on a busy 2-core box ran ~10x slower than 1 (measured)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def trained(_one_thread):
    uf, itf, u, it, s, y = synthetic_log()
    data = build_reward_data(uf, itf, u, it, s, y, num_negatives=1, seed=0, num_scenarios=S)
    train, cal, test = data.split((0.6, 0.2, 0.2), seed=0)
    cfg = RewardModelConfig(user_dim=D, item_dim=D, num_scenarios=S, hidden_dim=32, epochs=4, weight_decay=1e-4)
    model, history = train_reward_model(train, cfg)
    return model, history, train, cal, test


def test_model_beats_constant_predictor_on_held_out(trained):
    model, history, train, _, test = trained
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    metrics = evaluate(model, test)
    base_rate = train.labels[:, 0].mean()
    const_ll = log_loss(torch.full((len(test),), float(base_rate)), test.labels[:, 0])
    assert roc_auc(torch.full((len(test),), float(base_rate)), test.labels[:, 0]) == 0.5
    assert metrics["auc_click"] > 0.7  # measured ~0.78
    assert metrics["logloss_click"] < const_ll - 0.05
    assert metrics["auc_cart"] > 0.6 and metrics["auc_order"] > 0.6


def test_calibration_does_not_worsen_held_out_log_loss(trained):
    model, _, _, cal, test = trained
    model = copy.deepcopy(model)
    before_cal, before_test = evaluate(model, cal), evaluate(model, test)
    fitted = calibrate(model, cal, "temperature")
    after_cal, after_test = evaluate(model, cal), evaluate(model, test)
    for head in ("click", "cart", "order"):
        assert after_cal[f"logloss_{head}"] <= before_cal[f"logloss_{head}"] + 1e-9  # fitted split
        assert after_test[f"logloss_{head}"] <= before_test[f"logloss_{head}"] + 2e-3  # unseen split
        assert after_test[f"auc_{head}"] == pytest.approx(before_test[f"auc_{head}"])  # monotone map
    assert all(s > 0 for s in fitted["scale"]) and fitted["bias"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_calibration_repairs_an_overconfident_model(trained, method):
    model, _, _, cal, test = trained
    model = copy.deepcopy(model)
    with torch.no_grad():  # logits x 4: same ranking, badly overconfident probabilities
        model.head.weight.mul_(4.0)
        model.head.bias.mul_(4.0)
    before = evaluate(model, test)["logloss_click"]
    fitted = calibrate(model, cal, method)
    after = evaluate(model, test)["logloss_click"]
    assert after < before - 0.1, (before, after)
    assert 0.15 < fitted["scale"][0] < 0.5  # ~1/4 undoes the scaling


def test_save_load_round_trip(trained, tmp_path):
    model, _, _, cal, test = trained
    model = copy.deepcopy(model)
    calibrate(model, cal, "platt")
    path = tmp_path / "reward.pt"
    save_reward_model(model, path)
    loaded = load_reward_model(path)
    assert loaded.config == model.config
    b = test.subset(torch.arange(50))
    torch.testing.assert_close(loaded.predict_proba(b.user_x, b.scenario, b.item_x),
                               model.predict_proba(b.user_x, b.scenario, b.item_x))
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a reward-model checkpoint"):
        load_reward_model(tmp_path / "bad.pt")


def test_broadcast_scoring_user_against_group_of_items(trained):
    model = trained[0]
    g = torch.Generator().manual_seed(0)
    user, items = torch.randn(2, 1, D, generator=g), torch.randn(2, 5, D, generator=g)
    scen = torch.tensor([[0], [2]])
    p = model.predict_proba(user, scen, items)
    assert p.shape == (2, 5, 3) and torch.all((p > 0) & (p < 1))
    flat = model.predict_proba(user.expand(2, 5, D).reshape(10, D), scen.expand(2, 5).reshape(10), items.reshape(10, D))
    torch.testing.assert_close(p.reshape(10, 3), flat)


def test_build_reward_data_negatives_and_errors():
    uf, itf = np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32)  # one-hot: ids recoverable
    u, it, s = np.array([0, 1, 1]), np.array([1, 2, 3]), np.array([0, 1, 2])
    y = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 0]], np.float32)  # (1, 3) was shown but not clicked
    data = build_reward_data(uf, itf, u, it, s, y, num_negatives=50, seed=0)
    torch.testing.assert_close(data.labels[:3], torch.from_numpy(y))
    neg = data.subset(torch.arange(3, len(data)))
    assert len(neg) > 100 and torch.all(neg.labels == 0)
    nu, ni = neg.user_x.argmax(1), neg.item_x.argmax(1)
    # negatives keep the logged row's user and scenario, never repeat a positive (user, item) pair
    assert not torch.any((nu == 0) & (ni == 1)) and not torch.any((nu == 1) & (ni == 2))
    assert torch.any((nu == 1) & (ni == 3))  # a non-positive impression may be drawn again as a negative
    assert set(neg.scenario[nu == 0].tolist()) == {0} and set(neg.scenario[nu == 1].tolist()) == {1, 2}
    with pytest.raises(ValueError, match="item_ids out of range"):
        build_reward_data(uf, itf, u, np.array([1, 9, 0]), s, y)
    with pytest.raises(ValueError, match="labels must have 3 columns"):
        build_reward_data(uf, itf, u, it, s, y[:, :2])
    with pytest.raises(ValueError, match="user_features contains 1 non-finite"):
        bad = uf.copy()
        bad[0, 0] = np.nan
        build_reward_data(bad, itf, u, it, s, y)


def test_roc_auc_and_log_loss_hand_values():
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # ties count one half: pairs (pos, neg) = (0.5, 0.5) tie, (0.5, 0.2) win -> (0.5 + 1) / 2
    assert roc_auc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 0, 0])) == pytest.approx(0.75)
    assert roc_auc(torch.tensor([0.3, 0.3, 0.3]), torch.tensor([1, 0, 1])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))
    assert log_loss(torch.tensor([0.8, 0.25]), torch.tensor([1.0, 0.0])) == pytest.approx(
        -(np.log(0.8) + np.log(0.75)) / 2
    )


def test_config_validation():
    with pytest.raises(ValueError, match="calibration"):
        RewardModelConfig(user_dim=2, item_dim=2, num_scenarios=1, calibration="isotonic")
    with pytest.raises(ValueError, match="num_scenarios"):
        RewardModelConfig(user_dim=2, item_dim=2, num_scenarios=0)


# ----------------------------------------------------------------------------- reward mapping

MAPPING = RewardMappingConfig.from_dict(
    {
        "scenarios": {"homepage": {"click": 1.0, "cart": 0.2}, "cart": [0.1, 0.5, 1.0]},
        "invalid_penalty": 0.5,
        "diversity_bonus": 0.2,
    }
)


def test_scenario_weights_and_invalid_penalty():
    probs = torch.tensor([[[0.5, 0.2, 0.1], [0.1, 0.1, 0.6]]]).expand(2, 2, 3)
    valid = torch.tensor([[True, True], [True, False]])
    no_bonus = RewardMappingConfig.from_dict({"scenarios": dict(MAPPING.scenario_weights), "invalid_penalty": 0.5})
    r = map_rewards(probs, ["homepage", "cart"], no_bonus, valid)
    hand = torch.tensor([[0.5 + 0.04, 0.1 + 0.02], [0.05 + 0.1 + 0.1, -0.5]])
    torch.testing.assert_close(r, hand)
    assert r[0, 0] > r[0, 1] and r[1, 0] < 0.1 * 0.1 + 0.5 * 0.1 + 0.6  # homepage favours click, cart favours order
    torch.testing.assert_close(map_rewards(probs, torch.tensor([0, 1]), no_bonus, valid), r)  # ids == names order


def test_diversity_bonus_share_of_differing_top_codes():
    top = torch.tensor([[3, 3, 7, 9], [1, 1, 1, 1]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    d = diversity_share(top, valid)
    # row 0: valid others of g0 = {g1 (same), g2 (diff)} -> 1/2; g2: both others differ -> 1; invalid -> 0
    torch.testing.assert_close(d, torch.tensor([[0.5, 0.5, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    probs = torch.zeros(2, 4, 3)
    r = map_rewards(probs, ["homepage", "cart"], MAPPING, valid, top)
    torch.testing.assert_close(r, torch.tensor([[0.1, 0.1, 0.2, -0.5], [0.0, 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="top_codes"):
        map_rewards(probs, ["homepage", "cart"], MAPPING, valid)


def test_unknown_scenario_raises_naming_it():
    with pytest.raises(ValueError, match=r"unknown scenario\(s\) \['search'\]"):
        map_rewards(torch.zeros(2, 2, 3), ["homepage", "search"], MAPPING)
    with pytest.raises(ValueError, match=r"unknown scenario id\(s\) \[5\]"):
        map_rewards(torch.zeros(1, 2, 3), torch.tensor([5]), MAPPING)
    with pytest.raises(ValueError, match="unknown actions"):
        RewardMappingConfig.from_dict({"scenarios": {"home": {"like": 1.0}}})


def test_unified_reward_end_to_end(trained):
    model = trained[0]
    g = torch.Generator().manual_seed(1)
    items = torch.randn(6, D, generator=g)
    users = torch.randn(2, D, generator=g)
    cfg = RewardMappingConfig.from_dict({"scenarios": {"homepage": [1, 0, 0], "feed": [1, 0, 0], "cart": [0, 0, 1]},
                                         "invalid_penalty": 1.0})

    def lookup(tokens):  # toy SID -> item: (a, b) -> 3a + b, valid if < 6
        idx = tokens[..., 0] * 3 + tokens[..., 1]
        return idx, idx < 6

    reward = UnifiedReward(model, cfg, items, lookup, context=lambda p: (users[p], torch.tensor([0, 2])))
    tokens = torch.tensor([[[0, 1], [1, 2], [2, 2]], [[0, 0], [3, 0], [1, 1]]])
    r = reward(torch.tensor([0, 1]), tokens)
    assert r.shape == (2, 3) and r[1, 1] == -1.0
    p = model.predict_proba(users[1], torch.tensor(2), items[4])
    assert r[1, 2].item() == pytest.approx(p[2].item(), rel=1e-6)  # cart scenario scores P(order)
