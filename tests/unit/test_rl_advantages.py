"""Group-relative advantages and the SA-GCPO group clip (models/rl/advantages.py)."""
import math

import pytest
import torch

from models.rl.advantages import group_advantages


def test_hand_computed_values_and_flat_group():
    r = torch.tensor([[1.0, 2.0, 3.0], [0.1, 0.1, 0.1]])
    a = group_advantages(r, eps=1e-6)
    std = math.sqrt(2 / 3)  # population std of (1, 2, 3)
    torch.testing.assert_close(a[0], torch.tensor([-1.0, 0.0, 1.0]) / (std + 1e-6))
    assert torch.all(a[1] == 0)  # exactly zero, not float noise / eps


def test_standardised_per_group_and_invariant_to_affine_reward_change():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(5, 8, generator=g)
    a = group_advantages(r)
    torch.testing.assert_close(a.mean(1), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.std(1, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(group_advantages(3.0 * r + 7.0), a, atol=1e-4, rtol=0)
    # groups are independent: changing row 0 leaves row 1 untouched
    r2 = r.clone()
    r2[0] += torch.arange(8.0)
    torch.testing.assert_close(group_advantages(r2)[1:], a[1:])


def test_group_clip_zeroes_positive_advantages_below_target_only():
    r = torch.tensor([[0.0, 0.1, 0.4, 0.9], [0.1, 0.2, 0.3, 0.3]])
    plain = group_advantages(r)
    clipped = group_advantages(r, group_clip=0.5)
    # row 0: mean 0.35 -> 0.4 is positive but below 0.5 -> 0; 0.9 keeps its advantage; negatives unchanged
    assert plain[0, 2] > 0 and clipped[0, 2] == 0
    assert clipped[0, 3] == plain[0, 3] > 0
    torch.testing.assert_close(clipped[0, :2], plain[0, :2])
    # row 1: every sample below target -> no positive advantage survives, negatives still push away
    assert torch.all(clipped[1] <= 0) and torch.all(clipped[1, :1] < 0)
    assert torch.all(clipped[1, 2:] == 0) and torch.all(plain[1, 2:] > 0)
    # target below every reward: identical to no clip
    torch.testing.assert_close(group_advantages(r, group_clip=-1.0), plain)


def test_non_finite_rewards_raise_naming_count():
    r = torch.tensor([[1.0, float("nan"), 2.0], [float("inf"), 0.0, float("nan")]])
    with pytest.raises(ValueError, match=r"3 non-finite values \(2 NaN, 1 inf\)"):
        group_advantages(r)


@pytest.mark.parametrize("shape", [(4,), (2, 1), (2, 3, 4)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match="shape|group size"):
        group_advantages(torch.zeros(shape))


def test_unscaled_advantages_keep_the_reward_differences():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.02, 0.01, 0.0, 0.01]])  # a hit; a group of small differences
    std = group_advantages(r)
    none = group_advantages(r, scale="none")
    assert torch.allclose(none, r - r.mean(1, keepdim=True))
    # standardised, the small-difference group pulls as hard as the hit; unscaled it is 50x weaker
    assert float(std[1].abs().max()) == pytest.approx(float(std[0].abs().max()) * 0.8165, rel=1e-3)
    assert none[1].abs().max() * 50 < none[0].abs().max() * 1.01
    assert group_advantages(torch.ones(2, 3), scale="none").abs().sum() == 0
    with pytest.raises(ValueError, match="scale"):
        group_advantages(r, scale="rank")
