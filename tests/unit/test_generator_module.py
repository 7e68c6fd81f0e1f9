"""GeneratorModule / train_generator: a step lowers the loss, LR schedule, checkpoints (weights_only, corrupt,
mismatched), resume continues the run, same seed -> same metrics."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from models.features.example_encoder import ExampleEncoder
from models.lightning.generator_module import GeneratorModule, warmup_cosine
from models.lightning.train import SFTConfig, load_generator, read_checkpoint, save_generator, train_generator
from models.nn import GeneratorConfig
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame

TINY = GeneratorConfig(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, igr_top_k=4, igr_dim=16, igr_hidden=32,
                       dropout=0.0)
SFT = SFTConfig(max_epochs=1, batch_size=16, eval_batch_size=32, lr=3e-3, warmup_steps=2, beam_width=10, patience=2,
                enable_progress_bar=False, seed=7)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def data():
    table = make_catalog()
    return table, make_frame(table, n_users=24)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    table, frame = data
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("sft")
        return train_generator(frame, table, SCENARIOS, TINY, SFT, out), out
    finally:
        torch.set_num_threads(n)


def metric_rows(history):
    return [{k: v for k, v in row.items() if k.startswith(("train_", "val_", "epoch", "step"))} for row in history]


# ----------------------------------------------------------------------------------------------- module
def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20, 0.1) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(20, 4, 20, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(99, 4, 20, 0.1) == pytest.approx(0.1)  # stays at the floor past the planned end


def test_one_training_step_reduces_loss(data):
    table, frame = data
    enc = ExampleEncoder.fit(frame[frame.split == "train"], table, SCENARIOS)
    cfg = enc.generator_config(TINY)
    module = GeneratorModule(cfg.to_dict(), lr=1e-2, warmup_steps=1, total_steps=10)
    batch = enc.encode(frame[frame.split == "train"])
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["weight_decay"] == 0.0  # no decay on biases/LN
    module.train()
    before = module.model(batch)["loss"]
    opt.zero_grad()
    before.backward()
    opt.step()
    sched.step()
    after = module.model(batch)["loss"]
    assert after.item() < before.item() - 1e-3
    assert module.hparams.generator_config == cfg.to_dict()


def test_module_rejects_bad_settings(data):
    table, _ = data
    with pytest.raises(ValueError, match="ks must be positive and <= beam_width"):
        GeneratorModule(TINY.to_dict(), beam_width=5, ks=(1, 10))
    from models.semantic_ids.trie import SIDTrie

    trie = SIDTrie.from_codes(table.codes, table.vocab_sizes)
    with pytest.raises(ValueError, match="trie vocab_sizes"):
        GeneratorModule(TINY.to_dict(), trie=trie)  # TINY keeps the default (256, 256, 256, 8)


# ----------------------------------------------------------------------------------------------- training
def test_training_writes_checkpoints_and_history(trained):
    res, out = trained
    assert res.best_checkpoint == out / "best.ckpt" and res.best_checkpoint.exists()
    assert res.last_checkpoint == out / "last.ckpt" and res.last_checkpoint.exists()
    assert (out / "encoder.json").exists() and list((out / "logs").rglob("metrics.csv"))
    assert len(res.history) == 1
    row = res.history[0]
    for key in ("train_loss", "train_ce", "train_q2i", "train_aux", "val_loss", "val_ce", "val_hr1", "val_hr5",
                "val_hr10", "val_ndcg5", "val_ndcg10"):
        assert key in row, key
    assert 0.0 <= row["val_hr1"] <= row["val_hr5"] <= row["val_hr10"] <= 1.0
    assert row["val_ndcg5"] <= row["val_hr5"] and row["val_ndcg10"] <= row["val_hr10"]
    assert res.best_score == pytest.approx(row["val_hr10"])
    assert res.generator_config.vocab_sizes == tuple(make_catalog().vocab_sizes)
    assert res.generator_config.n_scenarios == len(SCENARIOS) and res.resumed_from is None


def test_checkpoints_load_with_weights_only(trained, tmp_path):
    res, _ = trained
    raw = torch.load(res.best_checkpoint, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["generator_config"] == res.generator_config.to_dict()
    torch.load(res.last_checkpoint, map_location="cpu", weights_only=True)
    model = load_generator(res.best_checkpoint)
    assert not model.training
    for (k, a), b in zip(model.state_dict().items(), res.model.state_dict().values()):
        assert torch.equal(a, b), k
    path = save_generator(model, tmp_path / "gen.pt")
    again = load_generator(path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_corrupt_or_mismatched_checkpoint_raises(trained, tmp_path):
    res, _ = trained
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        load_generator(junk)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(res.best_checkpoint.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read checkpoint .*truncated.ckpt"):
        load_generator(truncated)
    with pytest.raises(ValueError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    ckpt = read_checkpoint(res.best_checkpoint)
    ckpt["hyper_parameters"]["generator_config"]["d_model"] = 64  # weights are 32-d
    torch.save(ckpt, tmp_path / "wrong.ckpt")
    with pytest.raises(ValueError, match=r"wrong.ckpt does not match.*shape mismatch"):
        load_generator(tmp_path / "wrong.ckpt")
    del ckpt["hyper_parameters"]["generator_config"]
    torch.save(ckpt, tmp_path / "nocfg.ckpt")
    with pytest.raises(ValueError, match="nocfg.ckpt has no generator_config"):
        load_generator(tmp_path / "nocfg.ckpt")


def test_same_seed_same_metrics(trained, data, tmp_path):
    res, _ = trained
    table, frame = data
    again = train_generator(frame, table, SCENARIOS, TINY, SFT, tmp_path / "again")
    assert metric_rows(again.history) == metric_rows(res.history)
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), res.model.state_dict().values()))


class _CaptureStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.epoch = trainer.current_epoch
        self.global_step = trainer.global_step
        self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def test_resume_continues_training(data, tmp_path):
    table, frame = data
    run = tmp_path / "run"
    first = train_generator(frame, table, SCENARIOS, TINY, SFT, run)
    saved = read_checkpoint(run / "last.ckpt")
    capture = _CaptureStart()
    more = train_generator(frame, table, SCENARIOS, TINY, SFTConfig(**{**SFT.__dict__, "max_epochs": 2}), run,
                           callbacks=[capture])
    assert more.resumed_from == run / "last.ckpt"
    assert capture.epoch == 1 and capture.global_step == saved["global_step"] > 0
    for k, v in capture.state.items():  # the weights at resume are the saved ones
        assert torch.equal(v, saved["state_dict"][f"model.{k}"]), k
    assert [r["epoch"] for r in more.history] == [0, 1]
    assert metric_rows(more.history)[0] == metric_rows(first.history)[0]  # history restored from the checkpoint
    assert more.history[1]["step"] == 2 * more.history[0]["step"]
    assert more.best_checkpoint == run / "best.ckpt"
    assert more.best_score == pytest.approx(max(r["val_hr10"] for r in more.history))
    # a different model config cannot resume from this directory
    with pytest.raises(ValueError, match="another generator config"):
        train_generator(frame, table, SCENARIOS, GeneratorConfig(**{**TINY.__dict__, "d_model": 64}),
                        SFTConfig(**{**SFT.__dict__, "max_epochs": 3}), run)
