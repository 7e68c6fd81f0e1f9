"""Fitting the reward model from training examples (models/rl/reward_training.py): what the reward_model asset
runs, tested without Dagster."""

import numpy as np
import pytest
import torch

from models.rl.reward_training import fit_reward_from_examples, item_feature_matrix
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame

SETTINGS = {"hidden_dim": 8, "scenario_dim": 4, "mlp_layers": 1, "lr": 1e-2, "batch_size": 64, "epochs": 2,
            "calibration": "temperature"}


def fit(frame, table, item_x):
    return fit_reward_from_examples(frame, table, item_x, SCENARIOS, max_examples=10_000, num_negatives=2, seed=0,
                                    model_settings=SETTINGS)


@pytest.fixture(scope="module")
def data():
    table = make_catalog(24)
    frame = make_frame(table, n_users=10, n_events=6)
    fused = np.random.default_rng(0).standard_normal((24, 6)).astype(np.float32)
    order = np.arange(24)[::-1]  # catalog embeddings in another order than the SID table
    item_x = item_feature_matrix(table.item_ids[order], fused[order], table)
    return table, frame, fused, item_x


def test_item_features_follow_the_sid_table_order_and_missing_items_are_named(data):
    table, _, fused, item_x = data
    np.testing.assert_array_equal(item_x.numpy(), fused)
    with pytest.raises(ValueError, match="1 items of the SID table have no catalog embedding.*i23"):
        item_feature_matrix(table.item_ids[:-1], fused[:-1], table)


def test_the_fit_reports_every_head_and_ignores_held_out_targets(data):
    table, frame, _, item_x = data
    result = fit(frame, table, item_x)
    assert result.heads["head"].tolist() == ["click", "cart", "order"]
    assert result.n_train_rows > 0 and result.n_held_out_rows == 3 * int((frame["split"] == "valid").sum())
    assert set(result.metrics) >= {"auc_click", "logloss_click"} and result.scenarios == tuple(SCENARIOS)
    # other validation / test targets: the same fitted model (they only score it)
    held_out = frame["split"] != "train"
    changed = frame.copy()
    ids = list(table.item_ids)
    other = changed.loc[held_out, "item_id"].map(lambda i: ids[(ids.index(i) + 5) % len(ids)])
    changed.loc[held_out, "item_id"] = other
    changed.loc[held_out, "sid_codes"] = other.map(lambda i: table.codes[ids.index(i)].tolist())
    again = fit(changed, table, item_x)
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, rtol=0, atol=0)
