"""The reasoning instruction's age as a generator input (GeneratorConfig.instruction_age): buckets, the example
encoder's ``instruction_age``, its effect on the logits (set and causal encoders, every-position training) and
the exported encoder graph."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.export import ENCODER_OUTPUTS, example_batch, export_onnx, make_session, serving_arrays
from models.features.example_encoder import EncoderConfig, ExampleEncoder
from models.lightning.generator_data import SequenceWindowDataset, sequence_windows
from models.nn import OxygenGenerator
from models.nn.instruction_age import AGE_EDGES_DAYS, N_AGE_BUCKETS, NO_AGE, age_bucket
from tests.unit.test_export import small_cfg, spread
from tests.unit.test_generator_data import SCENARIOS, hand_frame, make_catalog, make_frame
from tests.unit.test_generator_sequence import causal_cfg, seq_batch, serving_batch

pytestmark = pytest.mark.usefixtures("one_thread")
DAY = 86_400


def test_age_bucket_edges():
    minute, hour = 1 / 1440, 1 / 24
    ages = torch.tensor([NO_AGE, -1e-9, math.nan, 0.0, minute - 1e-9, minute, 10 * minute, hour, 6 * hour - 1e-6,
                         1.0, 3.0, 7.0, 14.0, 30.0 - 1e-6, 30.0, 400.0], dtype=torch.float64)
    assert age_bucket(ages).tolist() == [0, 0, 0, 1, 1, 2, 3, 4, 4, 6, 7, 8, 9, 9, 10, 10]
    assert N_AGE_BUCKETS == 11 and age_bucket(torch.tensor(AGE_EDGES_DAYS)).tolist() == list(range(2, 11))
    # rows without instruction: bucket 0 whatever the age
    has = torch.tensor([True, False, True])
    assert age_bucket(torch.tensor([2.0, 2.0, -1.0]), has).tolist() == [6, 0, 0]
    assert age_bucket(torch.zeros(2, 3)).shape == (2, 3)  # any shape (per-slot ages of sequence windows)


def test_encoder_measures_the_age_from_generated_at_to_the_example():
    table = make_catalog()
    train = pd.DataFrame({"profile_fields": [["age_band=25-34", "region=r1"]]})
    enc = ExampleEncoder.fit(train, table, SCENARIOS, EncoderConfig(max_short=2, max_long=10))
    t = 1_700_000_000
    frame = pd.concat([hand_frame(table)] * 2, ignore_index=True)
    frame["has_instruction"] = [True, False, True, True, True, True]
    frame["instruction_embedding"] = pd.Series([frame["instruction_embedding"][0]] * 6, dtype=object)
    frame["generated_at"] = pd.array([t - 2 * DAY, t - DAY, t - 3600, None, t + 60, t - 90 * DAY], dtype="Int64")
    frame["target_timestamp"] = t
    age = enc.encode(frame)["instruction_age"]
    assert age.dtype == torch.float32
    # days; flagged off / no generated_at -> -1; stamped after the example (clock skew) -> 0; old ages are kept
    np.testing.assert_allclose(age.numpy(), [2.0, NO_AGE, 1 / 24, NO_AGE, 0.0, 90.0], rtol=1e-6)
    # a frame without the time columns (old feature frames): no age
    assert (enc.encode(hand_frame(table))["instruction_age"] == NO_AGE).all()
    assert (enc.encode(frame.drop(columns=["target_timestamp"]))["instruction_age"] == NO_AGE).all()


def _first_logits(model: OxygenGenerator, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        memory, mask = model.encode(batch)
        return model.decode_step(memory, mask, torch.zeros(len(batch["scenario"]), 0, dtype=torch.long))[0]


@pytest.mark.parametrize("encoder", ["set", "causal"])
def test_age_changes_the_logits_only_when_enabled(encoder):
    for flag in (False, True):
        cfg = small_cfg(history_encoder=encoder, instruction_age=flag)
        model = spread(OxygenGenerator(cfg))
        batch = example_batch(cfg, 6, seed=1)
        batch["has_instruction"] = torch.tensor([True] * 5 + [False])
        batch["instruction_age"] = torch.full((6,), 0.5)  # bucket 5
        older = dict(batch, instruction_age=torch.full((6,), 20.0))  # bucket 9
        a, b = _first_logits(model, batch), _first_logits(model, older)
        if flag:
            assert (a[:5] - b[:5]).abs().amax(-1).min() > 1e-4
            assert torch.equal(a[5], b[5])  # no instruction: the age is not read
            # without the key every row is "no age" (bucket 0)
            none = dict(batch, instruction_age=torch.full((6,), NO_AGE))
            assert torch.equal(_first_logits(model, {k: v for k, v in batch.items() if k != "instruction_age"}),
                               _first_logits(model, none))
        else:
            assert torch.equal(a, b)
            assert not any("age_emb" in n for n, _ in model.named_parameters())


def test_every_position_training_reads_the_per_slot_age_like_serving():
    model = OxygenGenerator(causal_cfg(instruction_age=True)).eval()
    batch = seq_batch()
    w = batch["seq_sids"].shape[1]
    batch["seq_instruction_age"] = torch.rand(4, w, generator=torch.Generator().manual_seed(0)) * 20
    with torch.no_grad():
        out = model(batch)
        older = model(dict(batch, seq_instruction_age=batch["seq_instruction_age"] + 40))  # all bucket 10
        assert not torch.allclose(out["logits"][0], older["logits"][0])
        # the last position is exactly a serving request with that slot's age
        req = dict(serving_batch(batch, w - 1), instruction_age=batch["seq_instruction_age"][:, w - 1])
        memory, mask = model.encode(req)
        want, _ = model.decoder_logits(memory, mask, batch["seq_sids"][:, w - 1])
    last = batch["seq_loss_mask"].reshape(-1).nonzero()[:, 0]
    rows = [int((last == b * w + w - 1).nonzero()[0, 0]) for b in range(4)]
    for lvl, lg in enumerate(out["logits"]):
        torch.testing.assert_close(lg[rows], want[lvl], atol=1e-5, rtol=0)


def test_sequence_windows_carry_each_examples_age():
    table = make_catalog()
    frame = make_frame(table, n_users=6, n_events=5)
    frame["generated_at"] = frame["target_timestamp"] - 3600 * (1 + frame["position"])
    enc = ExampleEncoder.fit(frame, table, SCENARIOS, EncoderConfig(max_short=4, max_long=6))
    encoded = enc.encode(frame)
    windows = sequence_windows(frame, encoded, 7, 3)
    batch = SequenceWindowDataset(windows, encoded).__getitems__(list(range(len(windows))))
    slot = windows.index[:, -batch["seq_mask"].shape[1]:]
    ex = torch.where(slot >= 0, windows.slot_example[slot.clamp(min=0)], -1)
    want = torch.where(ex >= 0, encoded["instruction_age"][ex.clamp(min=0)], NO_AGE)
    assert torch.equal(batch["seq_instruction_age"], want)
    has = batch["seq_has_instruction"]
    assert (batch["seq_instruction_age"][has] > 0).all() and (batch["seq_instruction_age"][~has] == NO_AGE).all()


@pytest.mark.parametrize("flag", [False, True])
def test_the_exported_encoder_always_takes_the_age_and_reads_it_when_enabled(flag, tmp_path):
    cfg = small_cfg(history_encoder="causal", instruction_age=flag)
    model = spread(OxygenGenerator(cfg))
    enc = make_session(export_onnx(model, tmp_path)["encoder"])
    assert "instruction_age" in {i.name for i in enc.get_inputs()}
    arrays = serving_arrays(dict(example_batch(cfg, 4, seed=3), has_instruction=torch.ones(4, dtype=torch.bool)), cfg)
    a = dict(zip(ENCODER_OUTPUTS, enc.run(None, arrays)))
    b = dict(zip(ENCODER_OUTPUTS, enc.run(None, dict(arrays, instruction_age=arrays["instruction_age"] * 0 + 25.0))))
    assert np.array_equal(a["memory_mask"], b["memory_mask"])
    assert (np.abs(a["logits"] - b["logits"]).max() > 1e-4) == flag
    # serving_arrays fills a missing age with "none"
    del_age = {k: v for k, v in example_batch(cfg, 2).items() if k != "instruction_age"}
    assert serving_arrays(del_age, cfg)["instruction_age"].tolist() == [NO_AGE, NO_AGE]


def test_generate_model_py_reads_the_optional_age(tmp_path, monkeypatch):
    from models.decoding import constrained_beam_search
    from models.export import write_model_repository
    from models.semantic_ids.trie import SIDTrie
    from tests.unit.test_export import VOCAB, _load_model_py, _request, _torch, catalog

    cfg = small_cfg(history_encoder="causal", instruction_age=True)
    model = spread(OxygenGenerator(cfg))
    codes = catalog(200)
    trie = SIDTrie.from_codes(codes, VOCAB)
    dirs = write_model_repository(tmp_path, 1, model, trie, [f"i{j}" for j in range(len(codes))])
    assert 'name: "instruction_age" data_type: TYPE_FP32 dims: [ 1 ] optional: true' in \
        (dirs["oxygenrec_generate"].parent / "config.pbtxt").read_text()
    gen = _load_model_py(dirs["oxygenrec_generate"], monkeypatch)
    arrays = serving_arrays(dict(example_batch(cfg, 3, seed=4, codes=codes), has_instruction=torch.ones(3, dtype=bool)),
                            cfg)
    scalars = {k: arrays[k][:, None] for k in ("scenario", "has_instruction", "instruction_age")}
    extra = dict(beam_width=np.full((3, 1), 8, np.int32), top_k=np.full((3, 1), 5, np.int32))
    with_age = _request({**arrays, **scalars}, **extra)
    without = {k: v for k, v in with_age.items() if k != "instruction_age"}  # an old client: "no age"
    got = gen.execute([with_age, without])
    for resp, ages in zip(got, (arrays["instruction_age"], np.full(3, NO_AGE, np.float32))):
        assert resp.error is None
        items, scores = constrained_beam_search(model, _torch(dict(arrays, instruction_age=ages)), trie, 8, 5)
        assert torch.equal(resp.outputs["item_index"], items)
        torch.testing.assert_close(resp.outputs["score"], scores, atol=1e-4, rtol=0)
    assert not torch.allclose(got[0].outputs["score"], got[1].outputs["score"])
