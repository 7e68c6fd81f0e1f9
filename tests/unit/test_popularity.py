"""Most-popular baseline: counts, ties, per-scenario rankings, exclusion of seen items."""

import numpy as np
import pandas as pd
import pytest

from models.eval.split import encode_ids
from models.nn.popularity import MostPopular

# counts: item 3 x4, item 1 x3 (2 in "a", 1 in "b"), item 2 x2 ("b"), item 4 x2 ("b"), item 5 x0
ITEMS = np.array([3, 3, 3, 3, 1, 1, 1, 2, 2, 4, 4])
SCEN = np.array(["a", "a", "a", "a", "a", "a", "b", "b", "b", "b", "b"])
USERS = np.array(["u", "v", "u", "v", "u", "v", "w", "w", "x", "x", "w"])


def test_counts_and_global_ranking_with_ties():
    pop = MostPopular.fit(ITEMS, 5, scenarios=SCEN, users=USERS)
    np.testing.assert_array_equal(pop.counts, [0, 3, 2, 4, 2, 0])
    # ties (items 2 and 4, count 2) go to the smaller index; the padding index 0 never appears
    np.testing.assert_array_equal(pop.recommend(5, n=2), [[3, 1, 2, 4, 5]] * 2)


def test_per_scenario_and_unknown_scenario_fallback():
    pop = MostPopular.fit(ITEMS, 5, scenarios=SCEN)
    np.testing.assert_array_equal(pop.scenario_counts["b"], [0, 1, 2, 0, 2, 0])
    out = pop.recommend(3, scenarios=["b", "a", "new"], per_scenario=True)
    np.testing.assert_array_equal(out, [[2, 4, 1], [3, 1, 2], [3, 1, 2]])
    # without per_scenario the scenarios are ignored
    np.testing.assert_array_equal(pop.recommend(1, scenarios=["b", "a"]), [[3], [3]])


def test_exclude_seen_histories_and_users():
    pop = MostPopular.fit(ITEMS, 5, scenarios=SCEN, users=USERS)
    out = pop.recommend(2, histories=[np.array([3]), np.array([3, 1, 2]), np.array([], dtype=np.int64)], exclude_seen=True)
    np.testing.assert_array_equal(out, [[1, 2], [4, 5], [3, 1]])
    # exclude_seen=False ignores histories
    np.testing.assert_array_equal(pop.recommend(2, histories=[np.array([3])]), [[3, 1]])
    # users: their train items (u saw 3 and 1) are excluded, plus any extra history
    out = pop.recommend(2, users=["u", "w"], histories=[np.array([2]), np.array([], dtype=np.int64)], exclude_seen=True)
    np.testing.assert_array_equal(out, [[4, 5], [3, 5]])  # u: 3, 1 (train) + 2; w: 1, 2, 4 (train)


def test_from_frame_with_encoder():
    df = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["x", "y", "y"], "scenario": ["s", "s", "t"]})
    enc = encode_ids(["x", "y", "z"])
    pop = MostPopular.from_frame(df, enc)
    np.testing.assert_array_equal(enc.decode(pop.recommend(3, n=1)[0]), ["y", "x", "z"])
    np.testing.assert_array_equal(enc.decode(pop.recommend(1, users=["u"], exclude_seen=True)[0]), ["z"])


def test_bad_input():
    with pytest.raises(ValueError, match="encoded indices"):
        MostPopular.fit([0, 1], 3)
    pop = MostPopular.fit(ITEMS, 5)
    with pytest.raises(ValueError, match="k must be"):
        pop.recommend(6, n=1)
    with pytest.raises(ValueError, match="one common length"):
        pop.recommend(1, n=2, histories=[np.array([1])])
    with pytest.raises(ValueError, match="fewer than k"):
        pop.recommend(5, histories=[np.array([1])], exclude_seen=True)
