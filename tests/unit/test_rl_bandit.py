"""RL trainer on a toy contextual bandit over 2-token sequences (models/rl/trainer.py).

The policy is tabular and autoregressive: pi(a1 | c) pi(a2 | c, a1) over 4 x 4 arms for 2 contexts,
each context with one known best arm (reward 1.0; others uniform in [0, 0.5]). The expected reward is
computed exactly by enumerating the 16 arms.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.rl.trainer import GroupPolicyTrainer, Policy, RLConfig, RLTrainingError, train_policy

K, C = 4, 2
R = torch.rand(C, K, K, generator=torch.Generator().manual_seed(123)) * 0.5
R[0, 2, 1] = 1.0
R[1, 0, 3] = 1.0


class TabularPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits1 = nn.Parameter(torch.zeros(C, K))
        self.logits2 = nn.Parameter(torch.zeros(C, K, K))

    def _tables(self, ctx):
        return F.log_softmax(self.logits1[ctx], -1), F.log_softmax(self.logits2[ctx], -1)

    def log_probs(self, prompts, tokens):
        lp1, lp2 = self._tables(prompts)
        a1, a2 = tokens[..., 0], tokens[..., 1]
        l1 = lp1.gather(1, a1)
        l2 = lp2.gather(1, a1.unsqueeze(-1).expand(-1, -1, K)).gather(2, a2.unsqueeze(-1)).squeeze(-1)
        return torch.stack([l1, l2], -1)

    def sample(self, prompts, group_size, generator):
        lp1, lp2 = self._tables(prompts)
        b = prompts.shape[0]
        a1 = torch.multinomial(lp1.exp(), group_size, replacement=True, generator=generator)
        p2 = lp2.exp().gather(1, a1.unsqueeze(-1).expand(-1, -1, K)).reshape(b * group_size, K)
        a2 = torch.multinomial(p2, 1, generator=generator).reshape(b, group_size)
        tokens = torch.stack([a1, a2], -1)
        return tokens, self.log_probs(prompts, tokens), torch.ones(b, group_size, 2)

    @torch.no_grad()
    def expected_reward(self):
        lp1, lp2 = self._tables(torch.arange(C))
        return ((lp1.exp().unsqueeze(-1) * lp2.exp()) * R).sum((1, 2)).mean().item()


def reward_fn(prompts, tokens):
    return R[prompts.unsqueeze(1), tokens[..., 0], tokens[..., 1]]


def prompt_fn(step, generator):
    return torch.arange(C).repeat(4)  # B = 8 prompts, 4 per context


def config(**kw):
    base = dict(group_size=8, lr=0.1, beta=0.01, steps=20, ppo_epochs=2, seed=0)
    return RLConfig(**(base | kw))


def params(policy):
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


# tiny tensors: one intra-op thread (the shared fixture in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "algorithm, extra",
    [("grpo", {}), ("gspo", {}), ("sagcpo", {}), ("sagcpo", {"group_clip": 0.5})],
    ids=["grpo", "gspo", "sagcpo", "sagcpo_group_clip"],
)
def test_each_algorithm_increases_expected_reward(algorithm, extra):
    policy = TabularPolicy()
    before = policy.expected_reward()
    history = train_policy(policy, reward_fn, prompt_fn, config(algorithm=algorithm, **extra))
    after = policy.expected_reward()
    assert before == pytest.approx(0.284, abs=1e-3)  # uniform policy
    assert after > before + 0.4, (before, after)  # measured ~0.9+ after 20 steps
    assert len(history) == 20 and history[-1]["stopped_reason"] == "steps_done"
    for key in ("reward_mean", "kl", "kl_after", "entropy", "clip_frac", "grad_norm", "loss"):
        assert all(torch.isfinite(torch.tensor(h[key])) for h in history), key
    assert history[-1]["entropy"] < history[0]["entropy"]  # the policy concentrates
    assert history[-1]["reward_mean"] > history[0]["reward_mean"]
    if algorithm == "gspo":  # eps = 3e-4 / 4e-4: the second PPO epoch is mostly clipped
        assert max(h["clip_frac"] for h in history) > 0.3
    if algorithm == "sagcpo":
        assert all(0 < h["gate_mean"] <= 1 for h in history)
    if extra:  # group clip removed some positive advantages
        assert max(h["adv_zero_frac"] for h in history) > 0


def test_reference_stays_frozen_and_protocol_holds():
    policy = TabularPolicy()
    assert isinstance(policy, Policy)
    init = params(policy)
    trainer = GroupPolicyTrainer(policy, reward_fn, config(steps=3))
    trainer.fit(prompt_fn)
    for k, v in params(trainer.reference).items():
        torch.testing.assert_close(v, init[k])
    assert not torch.equal(params(policy)["logits1"], init["logits1"])


def test_nan_reward_raises_and_keeps_last_good_parameters():
    good = TabularPolicy()
    train_policy(good, reward_fn, prompt_fn, config(steps=2))
    calls = {"n": 0}

    def flaky_reward(prompts, tokens):
        calls["n"] += 1
        r = reward_fn(prompts, tokens)
        if calls["n"] == 3:
            r[0, 1] = float("nan")
        return r

    policy = TabularPolicy()
    with pytest.raises(RLTrainingError, match="step 2: reward_fn returned 1 non-finite"):
        train_policy(policy, flaky_reward, prompt_fn, config(steps=5))
    for k, v in params(policy).items():
        torch.testing.assert_close(v, params(good)[k], rtol=0, atol=0)


class NaNAfter(TabularPolicy):
    """log_probs turns NaN from its n-th call on (a diverging model)."""

    def __init__(self, n):
        super().__init__()
        self.calls, self.n = 0, n

    def log_probs(self, prompts, tokens):
        self.calls += 1
        out = super().log_probs(prompts, tokens)
        return out * float("nan") if self.calls >= self.n else out


def test_non_finite_loss_restores_state_from_before_the_step():
    good = TabularPolicy()
    train_policy(good, reward_fn, prompt_fn, config(steps=2))
    # per step: 1 sample + 2 epochs + 1 kl_after = 4 log_probs calls on the policy (the reference is a copy
    # whose counter is separate). Call 11 is epoch 2 of step 3, after epoch 1 already moved the parameters.
    policy = NaNAfter(11)
    trainer = GroupPolicyTrainer(policy, reward_fn, config(steps=5))
    with pytest.raises(RLTrainingError, match="step 2 epoch 1: non-finite sagcpo loss"):
        trainer.fit(prompt_fn)
    for k, v in params(policy).items():
        torch.testing.assert_close(v, params(good)[k], rtol=0, atol=0)
    assert len(trainer.history) == 2


def test_kl_stop_ends_training_and_reports():
    history = train_policy(TabularPolicy(), reward_fn, prompt_fn, config(steps=30, kl_stop=0.05))
    assert 1 <= len(history) < 30
    last = history[-1]
    assert last["stopped_reason"] == "kl_stop" and last["kl_after"] > 0.05
    assert "kl_stop=0.05" in last["stop_message"]
    assert all(h["kl_after"] <= 0.05 and h["stopped_reason"] is None for h in history[:-1])


def test_config_and_shape_errors():
    with pytest.raises(ValueError, match="algorithm"):
        RLConfig(algorithm="ppo")
    with pytest.raises(ValueError, match="tau_neg"):
        RLConfig(tau_pos=2.0, tau_neg=1.0)
    with pytest.raises(ValueError, match=r"reward_fn returned shape \(8,\)"):
        train_policy(TabularPolicy(), lambda p, t: reward_fn(p, t)[:, 0], prompt_fn, config(steps=1))
