"""IGR / Q2I: loss optimises, anti-collapse terms behave, top-K selection is right and skips padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.nn.igr import IGRAdapter, decorrelation_loss, igr_select, info_nce, q2i_loss, variance_loss


# tiny tensors: one intra-op thread (the shared fixture in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_q2i_loss_decreases_on_synthetic_pairs():
    g = torch.Generator().manual_seed(0)
    d_model, n = 16, 128
    latent = torch.randn(n, 6, generator=g)  # shared intent behind each (instruction, item) pair
    a_s, a_r, a_i = (torch.randn(6, d_model, generator=g) for _ in range(3))
    scen = latent @ a_s + 0.1 * torch.randn(n, d_model, generator=g)
    reason = latent @ a_r + 0.1 * torch.randn(n, d_model, generator=g)
    item = latent @ a_i + 0.1 * torch.randn(n, d_model, generator=g)
    torch.manual_seed(0)
    adapter = IGRAdapter(d_model, dim=8, hidden=32)
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)

    def losses():
        return q2i_loss(adapter.query(scen, reason), adapter.item(item), temperature=0.1)

    first = {k: v.item() for k, v in losses().items()}
    for _ in range(60):
        opt.zero_grad()
        losses()["total"].backward()
        opt.step()
    last = {k: v.item() for k, v in losses().items()}
    assert last["total"] < 0.5 * first["total"]
    assert last["nce"] < 0.5 * first["nce"]
    # the aligned space retrieves the paired item far above chance (1/128)
    q = F.normalize(adapter.query(scen, reason), dim=-1)
    z = F.normalize(adapter.item(item), dim=-1)
    assert ((q @ z.T).argmax(1) == torch.arange(n)).float().mean() > 0.5


def test_decorrelation_zero_for_whitened_positive_for_correlated():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g, dtype=torch.float64)
    xc = x - x.mean(0)
    cov = xc.T @ xc / (x.shape[0] - 1)
    white = xc @ torch.linalg.inv(torch.linalg.cholesky(cov)).T  # covariance exactly I
    assert decorrelation_loss(white).item() < 1e-12
    corr = x.clone()
    corr[:, 1] = corr[:, 0] + 0.1 * corr[:, 1]
    assert decorrelation_loss(corr).item() > 0.1
    # formula check: sum of squared off-diagonals / dim
    c = torch.cov(corr.T)
    assert torch.isclose(decorrelation_loss(corr), ((c - torch.diag(c.diag())) ** 2).sum() / 8)


def test_variance_hinge():
    g = torch.Generator().manual_seed(2)
    spread = 3.0 * torch.randn(512, 4, generator=g)
    assert variance_loss(spread, gamma=1.0).item() == 0.0
    collapsed = torch.ones(64, 4)
    assert abs(variance_loss(collapsed, gamma=1.0).item() - (1.0 - 1e-2)) < 1e-6  # gamma - sqrt(eps)
    assert variance_loss(torch.ones(1, 4)).item() == 0.0


def test_info_nce_alignment_and_duplicate_targets():
    q = F.normalize(torch.eye(4), dim=-1)
    assert info_nce(q, q, temperature=0.01).item() < 1e-6
    assert info_nce(q, q.roll(1, 0), temperature=0.01).item() > 10
    # rows 0 and 1 share a target: with the duplicate mask, row 0 is not penalised for row 1's identical target
    t = q.clone()
    t[1] = t[0]
    same = torch.zeros(4, 4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    assert info_nce(q, t, 0.05, same) < info_nce(q, t, 0.05)


def test_igr_selects_the_most_relevant_items_and_never_padding():
    q = torch.tensor([[1.0, 0.0]])
    angles = torch.tensor([0.9, 0.1, 1.5, 0.3, 0.0, 2.5, 0.05])  # cos decreases with angle
    items = torch.stack([angles.cos(), angles.sin()], -1)[None]
    mask = torch.tensor([[True, True, True, True, False, True, False]])  # 4 and 6 (the closest!) are padding
    idx, sel, scores = igr_select(q, items, mask, top_k=3)
    assert idx.tolist() == [[1, 3, 0]] and sel.all()
    assert torch.allclose(scores, angles[[1, 3, 0]].cos()[None])
    # fewer real items than K: all real ones are picked, extra picks come back masked
    idx, sel, scores = igr_select(q, items, mask, top_k=6)
    picked = set(idx[sel].tolist())
    assert picked == {0, 1, 2, 3, 5} and sel.sum() == 5
    assert not mask.gather(1, idx)[~sel].any()
    assert idx[~sel].tolist() == [4]  # padding picks: earliest slot first (the same in torch and ONNX)
    assert torch.isneginf(scores[~sel]).all()


def test_igr_batched_random_respects_mask():
    g = torch.Generator().manual_seed(3)
    b, m, k = 16, 40, 8
    q = F.normalize(torch.randn(b, k, generator=g), dim=-1)
    z = F.normalize(torch.randn(b, m, k, generator=g), dim=-1)
    mask = torch.rand(b, m, generator=g) > 0.6
    idx, sel, _ = igr_select(q, z, mask, top_k=10)
    assert torch.equal(sel, mask.gather(1, idx))
    for i in range(b):  # brute force per row
        real = mask[i].nonzero()[:, 0]
        s = (z[i, real] @ q[i])
        expect = real[s.argsort(descending=True)[:10]]
        assert idx[i, sel[i]].tolist() == expect.tolist()
