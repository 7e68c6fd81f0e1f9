"""OxygenGenerator: shapes, KV-cache equivalence, causality, padding invariance, instruction placements,
MoE routing/aux loss, default instruction."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.nn import INSTRUCTION_POSITIONS, GeneratorConfig, OxygenGenerator
from models.nn.layers import MoEFeedForward

VOCAB = (8, 8, 8, 3)


# tiny tensors: one intra-op thread (the shared fixture in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**kw) -> GeneratorConfig:
    base = dict(vocab_sizes=VOCAB, n_scenarios=3, profile_vocab_size=40, n_profile_fields=4, d_model=32, n_heads=4,
                enc_layers=2, dec_layers=2, dropout=0.0, max_short=6, max_long=12, igr_top_k=4, igr_dim=16, igr_hidden=32)
    base.update(kw)
    return GeneratorConfig(**base)


def random_sids(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.stack([torch.randint(0, v, shape, generator=g) for v in VOCAB], -1)


def make_batch(b: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    short_len = torch.randint(0, 7, (b,), generator=g)
    long_len = torch.randint(0, 13, (b,), generator=g)
    profile = torch.randint(1, 40, (b, 4), generator=g)
    profile[0, 2:] = 0  # padded profile fields
    return {
        "scenario": torch.randint(0, 3, (b,), generator=g),
        "profile": profile,
        "instruction_emb": torch.randn(b, 384, generator=g),
        "has_instruction": torch.arange(b) % 3 != 1,
        "short_sids": random_sids(g, b, 6),
        "short_mask": torch.arange(6)[None] < short_len[:, None],  # mixed lengths incl. empty
        "long_sids": random_sids(g, b, 12),
        "long_mask": torch.arange(12)[None] < long_len[:, None],
        "target_sids": random_sids(g, b),
    }


def test_output_shapes():
    cfg = small_cfg()
    model = OxygenGenerator(cfg)
    batch = make_batch()
    out = model(batch)
    for key in ("loss", "ce_loss", "q2i_loss", "aux_loss"):
        assert out[key].shape == () and torch.isfinite(out[key])
    assert [lg.shape for lg in out["logits"]] == [(6, v) for v in VOCAB]
    assert out["nll"].shape == (6,)
    assert out["igr_index"].shape == (6, 4)
    memory, memory_mask = model.encode(batch)
    assert memory.shape == (6, 4 + 2 + 6 + 4 + 1, 32) and memory_mask.shape == memory.shape[:2]
    assert not memory_mask[:, -1].any()  # the instruction slot is not cross-attended
    lp = model.token_log_probs(batch, batch["target_sids"][:, None])
    assert lp.shape == (6, 1, 4)
    assert torch.allclose(-lp.sum(-1)[:, 0], out["nll"], atol=1e-5)


@pytest.mark.parametrize("position", INSTRUCTION_POSITIONS)
@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_cached_decoding_equals_full_decoding(position, ffn):
    model = OxygenGenerator(small_cfg(instruction_position=position, ffn=ffn)).eval()
    batch = make_batch()
    target = batch["target_sids"]
    with torch.no_grad():
        memory, mask = model.encode(batch)
        full, _ = model.decoder_logits(memory, mask, target)
        cache = None
        for t in range(len(VOCAB)):
            step, cache = model.decode_step(memory, mask, target[:, :t], cache)
            assert torch.allclose(step, full[t], atol=1e-5), (position, t)
            uncached, _ = model.decode_step(memory, mask, target[:, :t], None)
            assert torch.allclose(uncached, full[t], atol=1e-5)
        # grouped rows (G candidates per user, as in beam search) give the same numbers
        g = 3
        rep = target.repeat_interleave(g, 0)
        grouped, _ = model.decoder_logits(memory, mask, rep)
        assert torch.allclose(grouped[2], full[2].repeat_interleave(g, 0), atol=1e-5)


def test_no_future_leakage_in_decoder():
    model = OxygenGenerator(small_cfg()).eval()
    batch = make_batch()
    base = model(batch)["logits"]
    for t in range(len(VOCAB) - 1):
        changed = dict(batch)
        tgt = batch["target_sids"].clone()
        tgt[:, t] = (tgt[:, t] + 1) % VOCAB[t]
        changed["target_sids"] = tgt
        logits = model(changed)["logits"]
        for level in range(t + 1):  # predictions up to level t never see token t
            assert torch.equal(logits[level], base[level])
        assert not torch.allclose(logits[t + 1], base[t + 1])  # ...but the next one does


@pytest.mark.parametrize("ffn,n_recent", [("dense", 0), ("moe", 0), ("dense", 3)])
def test_padding_invariance(ffn, n_recent):
    model = OxygenGenerator(small_cfg(ffn=ffn, n_recent=n_recent)).eval()
    batch = make_batch()
    batch["profile_mask"] = batch["profile"] != 0
    g = torch.Generator().manual_seed(9)
    noisy = dict(batch)
    for key in ("short", "long"):
        sids, mask = batch[f"{key}_sids"], batch[f"{key}_mask"]
        garbage = random_sids(g, *mask.shape)
        garbage[..., 0] = -1 if key == "short" else garbage[..., 0]  # padding may even hold invalid codes
        noisy[f"{key}_sids"] = torch.where(mask[..., None], sids, garbage)
    noisy["profile"] = torch.where(batch["profile_mask"], batch["profile"], 7)
    a, b = model(batch), model(noisy)
    for key in ("loss", "ce_loss", "q2i_loss", "aux_loss"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    for la, lb in zip(a["logits"], b["logits"]):
        assert torch.allclose(la, lb, atol=1e-6)
    # sanity: a real (unmasked) item does move the output
    changed = dict(batch)
    s = batch["short_sids"].clone()
    row = int(batch["short_mask"].sum(1).argmax())
    s[row, 0] = (s[row, 0] + 1) % torch.tensor(VOCAB)
    changed["short_sids"] = s
    assert not torch.allclose(model(changed)["logits"][0][row], a["logits"][0][row])


@pytest.mark.parametrize("position", INSTRUCTION_POSITIONS)
def test_each_instruction_placement_trains(position):
    torch.manual_seed(0)
    model = OxygenGenerator(small_cfg(instruction_position=position))
    batch = make_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = model(batch)["loss"]
    opt.zero_grad()
    before.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    assert model(batch)["loss"].item() < before.item()


@pytest.mark.parametrize("position", INSTRUCTION_POSITIONS)
def test_decoder_reads_instruction_only_when_placed(position):
    model = OxygenGenerator(small_cfg(instruction_position=position)).eval()
    batch = make_batch()
    with torch.no_grad():
        memory, mask = model.encode(batch)
        other = memory.clone()
        other[:, -1] = other[:, -1].flip(0)  # swap the decoder instruction tokens between users
        a, _ = model.decoder_logits(memory, mask, batch["target_sids"])
        b, _ = model.decoder_logits(other, mask, batch["target_sids"])
    assert torch.equal(a[0], b[0]) == (position == "none")


def test_instruction_influences_output():
    batch = make_batch()
    batch["has_instruction"] = torch.ones(6, dtype=torch.bool)
    other = {**batch, "instruction_emb": batch["instruction_emb"].flip(0)}
    model = OxygenGenerator(small_cfg()).eval()
    assert not torch.allclose(model(batch)["logits"][0], model(other)["logits"][0])


def test_moe_aux_finite_and_routing_is_top_k():
    cfg = small_cfg(ffn="moe", n_experts=4, moe_top_k=2)
    model = OxygenGenerator(cfg)
    out = model(make_batch())
    assert torch.isfinite(out["aux_loss"]) and out["aux_loss"].item() > 0
    moes = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert len(moes) == cfg.enc_layers + cfg.dec_layers
    for moe in moes:
        gates = moe.last_gates
        assert ((gates > 0).sum(-1) == 2).all()
        assert torch.allclose(gates.sum(-1), torch.ones(gates.shape[0]), atol=1e-5)
    out["loss"].backward()
    assert moes[0].router.weight.grad.abs().sum() > 0  # the aux loss / gates train the router
    # perfectly uniform routing gives aux = 1 (Switch normalisation)
    moe = MoEFeedForward(8, 16, n_experts=4, top_k=2, dropout=0.0)
    torch.nn.init.zeros_(moe.router.weight)
    _, aux = moe(torch.randn(10, 8))
    assert abs(aux.item() - 1.0) < 1e-6  # P_e = 1/E for all e  ->  aux = E * sum_e f_e / E = 1
    assert OxygenGenerator(small_cfg(ffn="dense"))(make_batch())["aux_loss"].item() == 0.0


def test_default_instruction_is_used_and_learned():
    model = OxygenGenerator(small_cfg())
    batch = make_batch()
    batch["has_instruction"] = torch.zeros(6, dtype=torch.bool)
    out = model(batch)
    out["loss"].backward()
    assert model.default_instruction.grad is not None and model.default_instruction.grad.abs().sum() > 0
    # rows without instruction ignore instruction_emb entirely
    model.eval()
    other = dict(batch)
    other["instruction_emb"] = torch.randn(6, 384)
    with torch.no_grad():
        assert torch.equal(model(batch)["logits"][0], model(other)["logits"][0])
    # with every instruction present the default gets no gradient
    model.train()
    model.zero_grad()
    batch["has_instruction"] = torch.ones(6, dtype=torch.bool)
    model(batch)["loss"].backward()
    assert model.default_instruction.grad is None or model.default_instruction.grad.abs().sum() == 0


def test_use_igr_false_keeps_first_real_items():
    model = OxygenGenerator(small_cfg(use_igr=False)).eval()
    batch = make_batch()
    out = model(batch)
    assert out["q2i_loss"].item() == 0.0
    n_real = batch["long_mask"].sum(1)
    for i in range(6):
        k = int(min(4, n_real[i]))
        assert out["igr_index"][i, :k].tolist() == list(range(k))
        assert out["igr_mask"][i].sum() == k


def test_igr_in_model_never_selects_padding():
    model = OxygenGenerator(small_cfg()).eval()
    batch = make_batch()
    out = model(batch)
    assert torch.equal(out["igr_mask"], batch["long_mask"].gather(1, out["igr_index"]))
    assert torch.equal(out["igr_mask"].sum(1), batch["long_mask"].sum(1).clamp(max=4))


@pytest.mark.parametrize("use_igr", [True, False])
def test_recent_items_enter_the_encoder_and_retrieval_picks_older_ones(use_igr):
    model = OxygenGenerator(small_cfg(n_recent=3, use_igr=use_igr)).eval()
    batch = make_batch()
    out = model(batch)
    older = batch["long_mask"].sum(1).clamp(min=3) - 3  # real items beyond the 3 newest
    assert bool((out["igr_index"][out["igr_mask"]] >= 3).all())  # never re-picks a recent item
    assert torch.equal(out["igr_mask"].sum(1), older.clamp(max=4))
    if not use_igr:  # the newest of the older items, in order
        for i in range(6):
            k = int(min(4, older[i]))
            assert out["igr_index"][i, :k].tolist() == list(range(3, 3 + k))
    # the newest item always reaches the output
    row = int(batch["long_mask"].sum(1).argmax())
    changed = dict(batch)
    sids = batch["long_sids"].clone()
    sids[row, 0] = (sids[row, 0] + 1) % torch.tensor(VOCAB)
    changed["long_sids"] = sids
    assert not torch.allclose(model(changed)["logits"][0][row], out["logits"][0][row])
    memory, memory_mask = model.encode(batch)
    plain, _ = OxygenGenerator(small_cfg(use_igr=use_igr)).eval().encode(batch)
    assert memory.shape[1] == plain.shape[1] + 3


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n_recent"):
        small_cfg(n_recent=13)
    with pytest.raises(ValueError, match="instruction_position"):
        small_cfg(instruction_position="middle")
    with pytest.raises(ValueError, match="moe_top_k"):
        small_cfg(ffn="moe", n_experts=2, moe_top_k=3)
    model = OxygenGenerator(small_cfg())
    batch = make_batch()
    bad = dict(batch)
    tgt = batch["target_sids"].clone()
    tgt[2, 3] = 3  # level 3 vocab is 3
    bad["target_sids"] = tgt
    with pytest.raises(ValueError, match="target_sids"):
        model(bad)
    bad = dict(batch)
    bad["short_sids"] = torch.zeros(6, 7, 4, dtype=torch.long)
    bad["short_mask"] = torch.ones(6, 7, dtype=torch.bool)
    with pytest.raises(ValueError, match="short_sids"):
        model(bad)
    with pytest.raises(ValueError, match="scenario"):
        model({**batch, "scenario": torch.full((6,), 3)})


def test_config_roundtrip_and_deterministic_init():
    cfg = small_cfg(ffn="moe")
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    assert GeneratorConfig(vocab_sizes=[4, 4]).vocab_sizes == (4, 4)  # YAML lists are accepted
    a, b = OxygenGenerator(cfg), OxygenGenerator(cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = OxygenGenerator(dataclasses.replace(cfg, seed=1))
    assert not torch.equal(a.code_emb.weight, c.code_emb.weight)
