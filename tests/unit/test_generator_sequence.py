"""Causal history encoder + training on every position: serving == the last position, causality, windows,
hashed item embeddings, and end-to-end SFT with train_positions="all"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.decoding.beam_search import constrained_beam_search
from models.lightning.generator_data import (
    EncoderConfig,
    ExampleEncoder,
    SequenceWindowDataset,
    sequence_windows,
    split_frames,
)
from models.lightning.train import SFTConfig, load_generator, train_generator
from models.nn import GeneratorConfig, OxygenGenerator
from models.semantic_ids.trie import SIDTrie
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame

VOCAB = (8, 8, 8, 3)
pytestmark = pytest.mark.usefixtures("one_thread")


def causal_cfg(**kw) -> GeneratorConfig:
    base = dict(vocab_sizes=VOCAB, n_scenarios=3, profile_vocab_size=40, n_profile_fields=4, d_model=32, n_heads=4,
                enc_layers=2, dec_layers=2, dropout=0.0, max_short=6, max_long=12, history_encoder="causal",
                item_buckets=64)
    base.update(kw)
    return GeneratorConfig(**base)


def seq_batch(b: int = 4, w: int = 9, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    seq = torch.stack([torch.randint(0, v, (b, w), generator=g) for v in VOCAB], -1)
    n_real = torch.tensor([w, w - 3, 2, w - 1])[:b]
    real = torch.arange(w)[None] >= (w - n_real)[:, None]  # right-aligned
    profile = torch.randint(1, 40, (b, 4), generator=g)
    profile[1] = 0  # a user without profile
    return {"seq_sids": seq, "seq_mask": real, "seq_loss_mask": real.clone(),
            "seq_scenario": torch.randint(0, 3, (b, w), generator=g),
            "seq_instruction_emb": torch.randn(b, w, 384, generator=g),
            "seq_has_instruction": torch.rand(b, w, generator=g) < 0.6, "profile": profile}


def serving_batch(batch: dict, row: int) -> dict:
    """The request of slot ``row``: history = slots < row (newest first, real items in front), its context."""
    hist, mask = batch["seq_sids"][:, :row].flip(1), batch["seq_mask"][:, :row].flip(1)
    order = torch.argsort((~mask).long(), dim=1, stable=True)  # real items first (they already are, right-aligned)
    return {"scenario": batch["seq_scenario"][:, row], "instruction_emb": batch["seq_instruction_emb"][:, row],
            "has_instruction": batch["seq_has_instruction"][:, row], "profile": batch["profile"],
            "long_sids": hist.gather(1, order[..., None].expand_as(hist)), "long_mask": mask.gather(1, order)}


def row_logits(out: dict, batch: dict, b: int, row: int) -> list[torch.Tensor]:
    sel = batch["seq_loss_mask"].reshape(-1).nonzero()[:, 0].tolist()
    i = sel.index(b * batch["seq_sids"].shape[1] + row)
    return [lg[i] for lg in out["logits"]]


def test_last_position_is_exactly_serving():
    model = OxygenGenerator(causal_cfg()).eval()
    batch = seq_batch()
    w = batch["seq_sids"].shape[1]
    out = model(batch)
    req = serving_batch(batch, w - 1)
    memory, mask = model.encode(req)
    want, _ = model.decoder_logits(memory, mask, batch["seq_sids"][:, w - 1])
    for b in range(4):
        for got, ref in zip(row_logits(out, batch, b, w - 1), want):
            torch.testing.assert_close(got, ref[b], atol=1e-5, rtol=1e-5)


def test_rows_never_see_later_items():
    model = OxygenGenerator(causal_cfg()).eval()
    batch = seq_batch()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["seq_sids"][:, 5] = (changed["seq_sids"][:, 5] + 1) % torch.tensor(VOCAB)
    a, b = model(batch), model(changed)
    for user in (0, 3):
        for row in range(6):  # rows <= 5 read items < row <= 5 (row 5's own target is teacher-forced input only after BOS)
            if not bool(batch["seq_loss_mask"][user, row]):
                continue
            got, ref = row_logits(b, changed, user, row), row_logits(a, batch, user, row)
            n = len(got) if row < 5 else 1  # row 5: its level-0 logits do not read its own codes
            for l in range(n):
                torch.testing.assert_close(got[l], ref[l])
        later = row_logits(b, changed, user, 7)[0] - row_logits(a, batch, user, 7)[0]
        assert later.abs().max() > 1e-6  # and later rows do read item 5


def test_left_padding_and_serving_padding_change_nothing():
    model = OxygenGenerator(causal_cfg()).eval()
    batch = seq_batch()
    pad = 3
    wide = {k: (torch.cat([torch.zeros_like(v[:, :pad]), v], 1) if k.startswith("seq_") else v) for k, v in batch.items()}
    a, b = model(batch), model(wide)
    torch.testing.assert_close(a["ce_loss"], b["ce_loss"])
    req = serving_batch(batch, 8)
    longer = dict(req, long_sids=torch.cat([req["long_sids"], torch.zeros(4, 4, 4, dtype=torch.long)], 1),
                  long_mask=torch.cat([req["long_mask"], torch.zeros(4, 4, dtype=torch.bool)], 1))
    torch.testing.assert_close(model.encode(req)[0][:, -1], model.encode(longer)[0][:, -1])
    m1, k1 = model.encode(req)
    m2, k2 = model.encode(longer)
    t = batch["seq_sids"][:, 8]
    for x, y in zip(model.decoder_logits(m1, k1, t)[0], model.decoder_logits(m2, k2, t)[0]):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_empty_history_and_no_profile_are_finite_and_trainable():
    model = OxygenGenerator(causal_cfg())
    batch = seq_batch()
    batch["profile"] = torch.zeros(4, 4, dtype=torch.long)
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    req = {"scenario": torch.tensor([0, 1]), "long_sids": torch.zeros(2, 3, 4, dtype=torch.long),
           "long_mask": torch.zeros(2, 3, dtype=torch.bool)}
    memory, mask = model.eval().encode(req)
    assert torch.isfinite(memory).all() and mask.any(1).all()  # the null slot is always there


def test_forward_sequence_rejects_bad_inputs():
    model = OxygenGenerator(causal_cfg())
    batch = seq_batch()
    with pytest.raises(ValueError, match="seq_loss_mask"):
        model({**batch, "seq_loss_mask": ~batch["seq_mask"]})
    with pytest.raises(ValueError, match="shape"):
        model({**batch, "seq_scenario": batch["seq_scenario"][:, 1:]})
    with pytest.raises(ValueError, match="causal"):
        OxygenGenerator(causal_cfg(history_encoder="set")).forward_sequence(batch)
    with pytest.raises(ValueError, match="history_encoder"):
        causal_cfg(history_encoder="rnn")


def test_item_buckets_are_deterministic_in_range_and_spread():
    model = OxygenGenerator(causal_cfg(item_buckets=1024))
    g = torch.Generator().manual_seed(0)
    sids = torch.stack([torch.randint(0, v, (500,), generator=g) for v in VOCAB], -1)
    sids = torch.unique(sids, dim=0)
    b = model.item_buckets(sids)
    assert b.shape == (sids.shape[0], 2) and int(b.min()) >= 0 and int(b.max()) < 1024
    torch.testing.assert_close(b, model.item_buckets(sids.clone()))
    pairs = {tuple(r) for r in b.tolist()}
    assert len(pairs) == sids.shape[0]  # two hashes: no two tuples share both buckets here
    # the hashed vector changes the encoder token of an item, the code embeddings stay shared
    assert not torch.allclose(model.history_repr(sids[:3]), model.item_repr(sids[:3]))


def _frame_and_encoded(max_long=4, n_users=5, n_events=9):
    table = make_catalog()
    frame = make_frame(table, n_users=n_users, n_events=n_events)
    train = split_frames(frame)["train"]
    enc = ExampleEncoder.fit(train, table, SCENARIOS, EncoderConfig(max_short=3, max_long=max_long))
    return table, frame, train, enc, enc.encode(train)


def test_sequence_windows_cover_every_example_once_with_enough_context():
    table, frame, train, enc, encoded = _frame_and_encoded(max_long=4)
    w, stride = 5, 2
    win = sequence_windows(train, encoded, w, stride)
    assert win.consistency == 1.0
    ex = win.slot_example[win.index.clamp(min=0)]
    targets = ex[win.loss]
    assert sorted(targets.tolist()) == list(range(len(train)))  # each example exactly once
    # right-aligned: padding only on the left, the last slot is always real
    real = win.index >= 0
    assert bool(real[:, -1].all()) and bool((real.long().diff(dim=1) >= 0).all())
    # a loss slot's items before it are the user's previous targets, in order
    for i in range(len(win)):
        for j in torch.nonzero(win.loss[i])[:, 0].tolist():
            e = int(ex[i, j])
            user = train["user_id"].iloc[e]
            own = train[train.user_id == user].sort_values("target_timestamp")
            pos = own.index.get_loc(train.index[e])
            before = table.lookup_codes(own["item_id"].iloc[max(0, pos - j):pos].to_numpy())
            got = win.slot_codes[win.index[i, :j][win.index[i, :j] >= 0]].numpy()
            assert np.array_equal(got, before[-len(got):] if len(got) else before[:0])
            assert len(got) >= min(pos, w - stride)  # context: >= W - stride items (or all there are)
    ds = SequenceWindowDataset(win, encoded)
    batch = ds.__getitems__(list(range(len(win))))
    assert batch["seq_sids"].shape[1] <= w and bool(batch["seq_mask"][:, -1].all())
    assert int(batch["seq_loss_mask"].sum()) == len(train)


def test_sequence_windows_rebuild_the_feast_history_prefix():
    """A Feast frame has no example for a user's first event: it enters as history of the earliest example."""
    table = make_catalog()
    frame = make_frame(table, n_users=3, n_events=7)
    frame = frame[frame.position > 0].reset_index(drop=True)  # drop every user's first event
    train = split_frames(frame)["train"]
    enc = ExampleEncoder.fit(train, table, SCENARIOS, EncoderConfig(max_short=3, max_long=10))
    encoded = enc.encode(train)
    win = sequence_windows(train, encoded, 11, 5)
    assert win.consistency == 1.0
    assert int((win.slot_example < 0).sum()) == 3  # one history-only slot per user
    assert win.n_targets == len(train)


def test_sequence_windows_report_gaps():
    table, frame, train, enc, encoded = _frame_and_encoded(max_long=4)
    gappy = train.drop(index=train.index[3]).reset_index(drop=True)  # a missing example breaks the histories after it
    win = sequence_windows(gappy, enc.encode(gappy), 5, 2)
    assert win.consistency < 1.0
    with pytest.raises(ValueError, match="stride"):
        sequence_windows(train, encoded, 5, 5)


def test_sft_on_every_position_trains_and_serves(tmp_path):
    table = make_catalog()
    frame = make_frame(table, n_users=12, n_events=8)
    gen = GeneratorConfig(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, max_short=4, max_long=6,
                          history_encoder="causal", item_buckets=32, dropout=0.0)
    sft = SFTConfig(max_epochs=2, batch_size=4, eval_batch_size=8, beam_width=10, warmup_steps=2, patience=5,
                    enable_progress_bar=False, train_positions="all", window_stride=3)
    result = train_generator(frame, table, SCENARIOS, gen, sft, tmp_path / "run")
    assert len(result.history) == 2 and all("val_hr10" in h for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] + 1e-6
    model = load_generator(result.last_checkpoint)
    assert model.cfg.history_encoder == "causal"
    valid = result.encoder.encode(split_frames(frame)["valid"])
    trie = SIDTrie.from_codes(table.codes, table.vocab_sizes)
    items, scores = constrained_beam_search(model, valid, trie, beam_width=10)
    assert items.shape == (12, 10) and bool((items >= 0).all()) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="causal"):
        train_generator(frame, table, SCENARIOS, GeneratorConfig(d_model=32, n_heads=4), sft, tmp_path / "bad")


def test_grouped_sampler_batches_are_homogeneous_and_seeded():
    from models.lightning.generator_data import GroupedEpochSampler

    groups = np.array([0] * 23 + [1] * 17)
    s = GroupedEpochSampler(groups, batch_size=5, seed=3)
    a = list(s)
    assert sorted(a) == list(range(40))
    batches = [a[i:i + 5] for i in range(0, 40, 5)]
    full = 23 // 5 + 17 // 5
    assert all(len(set(groups[b])) == 1 for b in batches[:full])  # only the remainders at the end mix
    assert list(s) == a
    s.set_epoch(1)
    assert list(s) != a and sorted(s) == list(range(40))
    with pytest.raises(ValueError, match="1-D"):
        GroupedEpochSampler(groups.reshape(4, 10), 5)


def test_decoding_only_loss_rows_gives_the_same_loss():
    model = OxygenGenerator(causal_cfg()).eval()
    batch = seq_batch()
    late = {**batch, "seq_loss_mask": batch["seq_loss_mask"] & (torch.arange(9) >= 6)[None]}
    out = model(late)
    full = model(batch)
    sel = batch["seq_loss_mask"].reshape(-1).nonzero()[:, 0]
    keep = late["seq_loss_mask"].reshape(-1)[sel]
    torch.testing.assert_close(out["nll"], full["nll"][keep])


def test_repeat_bias_is_part_of_training_and_serving_logits():
    model = OxygenGenerator(causal_cfg(history_bias=True)).eval()
    with torch.no_grad():
        model.repeat_bias.copy_(torch.randn(model.repeat_bias.shape, generator=torch.Generator().manual_seed(1)) * 3)
    batch = seq_batch()
    batch["seq_sids"][0, 8] = batch["seq_sids"][0, 3]  # user 0's last target repeats an item of its history
    w = batch["seq_sids"].shape[1]
    out = model(batch)
    req = serving_batch(batch, w - 1)
    memory, mask = model.encode(req)
    plain, _ = model.decoder_logits(memory, mask, batch["seq_sids"][:, w - 1])
    scen, hist, hmask = model.history_for_bias(req)
    target = batch["seq_sids"][:, w - 1]
    hits = [model.history_hits(hist, hmask, target[:, :l]) for l in range(len(VOCAB))]
    assert all(bool(h[0, target[0, l]]) for l, h in enumerate(hits))  # every level of the repeated item is a hit
    for b in range(4):
        for l, (got, ref) in enumerate(zip(row_logits(out, batch, b, w - 1), plain)):
            want = ref[b] + hits[l][b].float() * model.repeat_bias[scen[b], l]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # beam search applies the same bias: with a large negative bias no history item is recommended
    with torch.no_grad():
        model.repeat_bias.fill_(-50.0)
    codes = torch.unique(torch.cat([req["long_sids"][req["long_mask"]], torch.stack(
        [torch.randint(0, v, (60,), generator=torch.Generator().manual_seed(2)) for v in VOCAB], -1)]), dim=0)
    trie = SIDTrie.from_codes(codes.numpy(), VOCAB)
    items, _ = constrained_beam_search(model, req, trie, beam_width=8)
    for b in range(4):
        seen = {tuple(c) for c in req["long_sids"][b][req["long_mask"][b]].tolist()}
        assert not seen & {tuple(codes[i].tolist()) for i in items[b].tolist() if i >= 0}


def test_repeat_bias_is_refused_where_it_is_not_implemented(tmp_path):
    from models.export import export_onnx
    from models.rl.generator_policy import GeneratorPolicy

    model = OxygenGenerator(causal_cfg(history_bias=True))
    with pytest.raises(ValueError, match="history_bias"):
        export_onnx(model, tmp_path)
    trie = SIDTrie.from_codes(np.array([[0, 0, 0, 0], [1, 2, 3, 0]]), VOCAB)
    with pytest.raises(ValueError, match="history_bias"):
        GeneratorPolicy(model, trie)
