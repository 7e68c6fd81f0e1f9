"""Hand-computed checks of the GRPO / GSPO / SA-GCPO objectives (models/rl/objectives.py)."""
import math

import pytest
import torch

from models.rl.objectives import (
    GRPOConfig,
    GSPOConfig,
    SAGCPOConfig,
    grpo_loss,
    gspo_loss,
    k3_kl,
    policy_loss,
    sagcpo_loss,
    sequence_ratio,
    sigmoid_gate,
)



@pytest.fixture(autouse=True)
def _float64():
    """Hand values to ~1e-12; restore the default dtype so other test modules are unaffected."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _leaf(x):
    return torch.tensor(x, dtype=torch.float64).requires_grad_(True)


def _grad(loss_fn, log_ratio, adv, mask=None, cfg=None, logp_ref=None):
    """Gradient of loss wrt logp at logp_old = 0, logp = log_ratio ([B, G, T])."""
    logp = _leaf(log_ratio)
    logp_old = torch.zeros_like(logp)
    mask = torch.ones_like(logp) if mask is None else torch.as_tensor(mask, dtype=torch.float64)
    loss, stats = loss_fn(logp, logp_old, logp_ref, mask, torch.as_tensor(adv, dtype=torch.float64), cfg)
    loss.backward()
    return loss, logp.grad, stats


# ----------------------------------------------------------------------------- SA-GCPO


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.05, 3.0])
def test_sagcpo_gate_value_and_slope_at_one(tau):
    r = _leaf(1.0)
    f = sigmoid_gate(r, tau)
    assert f.item() == pytest.approx(2.0 / tau, abs=1e-12)
    f.backward()
    assert r.grad.item() == pytest.approx(1.0, abs=1e-12)  # f'(1) = 4 * 0.5 * 0.5
    # and decays away from 1: f'(r) = 4 s (1 - s)
    for x in (0.5, 2.0, 5.0):
        s = 1 / (1 + math.exp(-tau * (x - 1)))
        r = _leaf(x)
        sigmoid_gate(r, tau).backward()
        assert r.grad.item() == pytest.approx(4 * s * (1 - s), rel=1e-12) and r.grad.item() < 1.0


def test_sagcpo_gradient_on_policy_equals_advantage():
    # B=1, G=3, T=2 with one padded token: N = 5 valid tokens
    adv = [[1.5, -0.5, 0.0]]
    mask = [[[1, 1], [1, 0], [1, 1]]]
    zeros = [[[0.0, 0.0]] * 3]
    for cfg, ref in ((SAGCPOConfig(beta=0.0), None), (SAGCPOConfig(beta=0.3), torch.zeros(1, 3, 2))):
        loss, grad, stats = _grad(sagcpo_loss, zeros, adv, mask, cfg, ref)
        expected = -torch.tensor(adv).unsqueeze(-1) * torch.tensor(mask, dtype=torch.float64) / 5
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)  # KL grad is 0 at logp == ref
        assert stats["gate_mean"] == pytest.approx(1.0) and stats["clip_frac"] == 0.0
        # loss value: -(sum f(1) A m) / N with f(1) = 4/tau * 0.5; A>0 -> tau_pos=1, A<0 -> tau_neg=1.05
        hand = -(2 * (2.0 / 1.0) * 1.5 + 1 * (2.0 / 1.05) * -0.5) / 5
        assert loss.item() == pytest.approx(hand, abs=1e-12)


def test_sagcpo_asymmetric_temperatures_break_symmetry():
    lr = math.log(1.5)  # r = 1.5 for every token
    cfg = SAGCPOConfig(tau_pos=1.0, tau_neg=2.0, beta=0.0)
    _, g_pos, _ = _grad(sagcpo_loss, [[[lr]]], [[1.0]], cfg=cfg)
    _, g_neg, _ = _grad(sagcpo_loss, [[[lr]]], [[-1.0]], cfg=cfg)

    def hand(tau, a):  # dL/dlogp = -4 s (1 - s) * r * A
        s = 1 / (1 + math.exp(-tau * 0.5))
        return -4 * s * (1 - s) * 1.5 * a

    assert g_pos.item() == pytest.approx(hand(1.0, 1.0), rel=1e-10)
    assert g_neg.item() == pytest.approx(hand(2.0, -1.0), rel=1e-10)
    assert abs(g_neg.item()) < abs(g_pos.item())  # negatives are damped harder (tau_neg > tau_pos)
    sym = SAGCPOConfig(tau_pos=1.3, tau_neg=1.3, beta=0.0)
    _, s_pos, _ = _grad(sagcpo_loss, [[[lr]]], [[1.0]], cfg=sym)
    _, s_neg, _ = _grad(sagcpo_loss, [[[lr]]], [[-1.0]], cfg=sym)
    assert s_pos.item() == pytest.approx(-s_neg.item(), rel=1e-12)


def test_sagcpo_config_rejects_tau_neg_below_tau_pos():
    with pytest.raises(ValueError, match="tau_neg"):
        SAGCPOConfig(tau_pos=1.0, tau_neg=0.5)


@pytest.mark.parametrize("name", ["grpo", "gspo", "sagcpo"])
@pytest.mark.parametrize("ratio", [1e-6, 1e6, 1e-300, 1e300])
def test_extreme_ratios_give_finite_loss_and_gradients(name, ratio):
    lr = math.log(ratio)
    logp = _leaf([[[lr, 0.0], [lr, lr]]])  # B=1, G=2, T=2
    logp_old = torch.zeros_like(logp)
    ref = torch.full_like(logp, -30.0)
    for a in ([[1.0, -1.0]], [[-2.0, 2.0]]):
        logp.grad = None
        loss, stats = policy_loss(name, logp, logp_old, ref, torch.ones_like(logp), torch.tensor(a))
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
        assert all(math.isfinite(v) for v in stats.values())


# ----------------------------------------------------------------------------- GRPO


def test_grpo_gradient_zero_in_clipped_regions_nonzero_inside():
    eps = 0.2
    cfg = GRPOConfig(eps_low=eps, eps_high=eps, beta=0.0)
    # one token per sequence; G = 6 cases
    ratios = [1.5, 0.5, 1.5, 0.5, 1.1, 0.9]
    adv = [1.0, -1.0, -1.0, 1.0, 1.0, -1.0]
    logp = [[[math.log(r)] for r in ratios]]
    loss, grad, stats = _grad(grpo_loss, logp, [adv], cfg=cfg)
    g = grad.flatten()
    assert g[0].item() == 0.0  # r > 1 + eps, A > 0: clipped
    assert g[1].item() == 0.0  # r < 1 - eps, A < 0: clipped
    for i in (2, 3, 4, 5):  # unclipped branch: dL/dlogp = -r A / N
        assert g[i].item() == pytest.approx(-ratios[i] * adv[i] / 6, rel=1e-12)
    assert stats["clip_frac"] == pytest.approx(2 / 6)
    # loss: -mean(min(rA, clip(r)A))
    hand = -(1.2 * 1 + 0.8 * -1 + 1.5 * -1 + 0.5 * 1 + 1.1 * 1 + 0.9 * -1) / 6
    assert loss.item() == pytest.approx(hand, abs=1e-12)


def test_grpo_asymmetric_eps_high():
    cfg = GRPOConfig(eps_low=0.2, eps_high=0.28, beta=0.0)
    _, g_in, _ = _grad(grpo_loss, [[[math.log(1.25)]]], [[1.0]], cfg=cfg)
    _, g_out, _ = _grad(grpo_loss, [[[math.log(1.3)]]], [[1.0]], cfg=cfg)
    assert g_in.item() == pytest.approx(-1.25) and g_out.item() == 0.0


# ----------------------------------------------------------------------------- GSPO


def test_gspo_ratio_is_exp_of_masked_mean_log_ratio():
    logp = torch.tensor([[[-1.0, -2.0, -0.5], [-0.3, -0.1, -9.0]]])
    logp_old = torch.tensor([[[-1.2, -1.5, -0.5], [-0.4, -0.4, 0.0]]])
    mask = torch.tensor([[[1, 1, 1], [1, 1, 0]]])
    s = sequence_ratio(logp, logp_old, mask)
    expected = torch.tensor([[math.exp((0.2 - 0.5 + 0.0) / 3), math.exp((0.1 + 0.3) / 2)]])
    torch.testing.assert_close(s, expected, rtol=1e-12, atol=0)
    _, stats = gspo_loss(logp, logp_old, None, mask, torch.tensor([[1.0, -1.0]]), GSPOConfig(beta=0.0))
    assert stats["ratio_mean"] == pytest.approx(expected.mean().item())


def test_gspo_gradient_is_sequence_level_and_clipped():
    cfg = GSPOConfig(eps_low=3e-4, eps_high=4e-4, beta=0.0)
    # inside the clip range: dL/dlogp_t = -s A / (|y| * n_seq) for every token of the sequence
    lr = [[[1e-4, -1e-4 + 2e-4]]]  # mean log-ratio 1e-4 -> s inside (1 - 3e-4, 1 + 4e-4)
    _, g, stats = _grad(gspo_loss, lr, [[2.0]], cfg=cfg)
    s = math.exp(1e-4)
    torch.testing.assert_close(g, torch.full((1, 1, 2), -s * 2.0 / 2), rtol=1e-12, atol=0)
    assert stats["clip_frac"] == 0.0
    # outside: mean log-ratio 1e-3 with A > 0 -> clipped, zero gradient
    _, g, stats = _grad(gspo_loss, [[[1e-3, 1e-3]]], [[2.0]], cfg=cfg)
    assert torch.all(g == 0) and stats["clip_frac"] == 1.0
    # same ratio with A < 0 -> the unclipped branch is the min, gradient flows
    _, g, _ = _grad(gspo_loss, [[[1e-3, 1e-3]]], [[-2.0]], cfg=cfg)
    assert torch.all(g > 0)


# ----------------------------------------------------------------------------- KL


def test_k3_kl_zero_at_reference_positive_otherwise():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.all(k3_kl(logp, logp) == 0)
    kl = k3_kl(logp, logp + torch.tensor([0.5, -0.5, 3.0]))
    hand = torch.tensor([math.exp(d) - d - 1 for d in (0.5, -0.5, 3.0)])
    torch.testing.assert_close(kl, hand, rtol=1e-12, atol=0)
    assert torch.all(kl > 0)


@pytest.mark.parametrize("name", ["grpo", "gspo", "sagcpo"])
def test_kl_term_in_loss(name):
    logp = torch.tensor([[[-1.0, -2.0]]])
    adv = torch.zeros(1, 1)  # pure KL
    mask = torch.ones_like(logp)
    cfg = {"grpo": GRPOConfig, "gspo": GSPOConfig, "sagcpo": SAGCPOConfig}[name](beta=0.5)
    loss, stats = policy_loss(name, logp, logp, logp, mask, adv, cfg)
    assert loss.item() == 0.0 and stats["kl"] == 0.0
    ref = logp + torch.tensor([[[0.2, -0.3]]])
    loss, stats = policy_loss(name, logp, logp, ref, mask, adv, cfg)
    hand = (math.exp(0.2) - 1.2 + math.exp(-0.3) + 0.3 - 1) / 2
    assert stats["kl"] == pytest.approx(hand, rel=1e-12) and loss.item() == pytest.approx(0.5 * hand, rel=1e-12)


# ----------------------------------------------------------------------------- dispatcher


def test_policy_loss_dispatch_and_errors():
    logp = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    old = logp + 0.1
    mask = torch.ones_like(logp)
    adv = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    for name, fn in (("grpo", grpo_loss), ("gspo", gspo_loss), ("sagcpo", sagcpo_loss)):
        a, _ = policy_loss(name, logp, old, logp, mask, adv)
        b, _ = fn(logp, old, logp, mask, adv)
        assert a.item() == b.item()
    with pytest.raises(ValueError, match="unknown policy loss 'ppo'"):
        policy_loss("ppo", logp, old, logp, mask, adv)
    with pytest.raises(ValueError, match="GRPOConfig"):
        policy_loss("grpo", logp, old, logp, mask, adv, SAGCPOConfig())
    with pytest.raises(ValueError, match="logp_ref"):
        policy_loss("sagcpo", logp, old, None, mask, adv)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss("grpo", logp, old, logp, mask, adv[:, :2])
    with pytest.raises(ValueError, match="mask"):
        policy_loss("grpo", logp, old, logp, mask[..., :2], adv)


def test_on_policy_the_three_objectives_have_the_same_gradient_and_off_policy_they_differ():
    """Why rl_comparison uses ppo_epochs > 1: at ratio 1 GRPO's clip is inactive, GSPO's sequence ratio has the
    token-mean gradient and SA-GCPO's gate weight is 4σ(0)(1-σ(0)) = 1, so one on-policy update is the same
    step for all three; only once the policy moves within a batch (ratio != 1) do they differ."""
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 3, 4, generator=g) * 3
    mask = torch.ones(4, 3, 4)
    adv = torch.randn(4, 3, generator=g)

    def grads(shift: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name in ("grpo", "gspo", "sagcpo"):
            logp = (old + shift).clone().requires_grad_(True)
            loss, _ = policy_loss(name, logp, old, old, mask, adv)  # same KL term (reference = old) for all
            (grad,) = torch.autograd.grad(loss, logp)
            out[name] = grad
        return out

    on = grads(torch.zeros_like(old))
    assert torch.allclose(on["grpo"], on["gspo"], atol=1e-6) and torch.allclose(on["grpo"], on["sagcpo"], atol=1e-6)
    off = grads(torch.randn(old.shape, generator=g) * 0.5)
    assert not torch.allclose(off["grpo"], off["gspo"], atol=1e-4)
    assert not torch.allclose(off["grpo"], off["sagcpo"], atol=1e-4)
