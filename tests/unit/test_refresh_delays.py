"""Near-line instruction updates: the action -> readable-online delay per updated user."""

import numpy as np
import pandas as pd

from models.reasoning.refresh import action_to_online_seconds


def test_delay_is_from_each_users_latest_high_value_action():
    events = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "action": ["cart", "order", "click", "cart"],
                           "timestamp": [100, 130, 150, 90]})
    delays = action_to_online_seconds(events, ["a", "b", "c"], ["cart", "order"], readable_at=200.0)
    np.testing.assert_array_equal(delays, [70.0, 110.0])  # a: its order at 130; b: no high-value action
    assert len(action_to_online_seconds(events.iloc[:0], ["a"], ["cart"], 200.0)) == 0
