"""ExampleEncoder / GeneratorDataModule: encoding of the point-in-time training frame into generator batches.

Also home of ``make_catalog`` / ``make_frame``: small frames in the Feast training schema (no Feast needed),
shared with the other generator test files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.lightning.generator_data import (
    EncoderConfig,
    EpochShuffleSampler,
    ExampleEncoder,
    GeneratorDataModule,
)
from models.nn import GeneratorConfig, OxygenGenerator
from models.semantic_ids import SemanticIdTable, assign_semantic_ids

SCENARIOS = ("home", "search", "cart")


# ----------------------------------------------------------------------------------------------- helpers
def make_catalog(n_items: int = 24) -> SemanticIdTable:
    """Items i00..: codes (i % 4, (i // 4) % 4) + disambiguation -> vocab (4, 4, D)."""
    ids = np.array([f"i{i:02d}" for i in range(n_items)])
    codes = np.stack([np.arange(n_items) % 4, (np.arange(n_items) // 4) % 4], 1)
    return assign_semantic_ids(ids, codes, "test", (4, 4))


def make_frame(table: SemanticIdTable, n_users: int = 12, n_events: int = 6, seed: int = 0,
               scenarios=SCENARIOS[:2], n_short: int = 20, n_long: int = 100) -> pd.DataFrame:
    """One row per interaction in the historical_features schema. User u buys the items with level-0 code
    u % 4 in a fixed cycle (learnable); scenario alternates; every third user has no instruction."""
    rng = np.random.default_rng(seed)
    codes = {i: c for i, c in zip(table.item_ids, table.codes.tolist())}
    rows = []
    for u in range(n_users):
        group = [i for i, c in codes.items() if c[0] == u % 4]
        seq = [group[(u + t) % len(group)] for t in range(n_events)]
        scen = [scenarios[t % len(scenarios)] for t in range(n_events)]
        emb = None if u % 3 == 0 else rng.standard_normal(384).astype(np.float32)
        for t in range(n_events):
            short = [seq[j] for j in range(t) if scen[j] == scen[t]][-n_short:]
            long = seq[:t][-n_long:]
            split = "test" if t == n_events - 1 else "valid" if t == n_events - 2 else "train"
            rows.append({
                "user_id": f"u{u:03d}", "scenario": scen[t], "item_id": seq[t],
                "event_timestamp": pd.Timestamp(1_700_000_000 + 3600 * t, unit="s", tz="UTC"),
                "target_timestamp": 1_700_000_000 + 3600 * t, "action": "click", "query": None, "position": t,
                "split": split,
                "profile_fields": [f"age_band={['18-24', '25-34'][u % 2]}", f"region=r{u % 3}"],
                "short_item_ids": short, "short_sids": [c for i in short for c in codes[i]],
                "short_actions": ["click"] * len(short), "short_len": len(short),
                "long_item_ids": long, "long_len": len(long),
                "sid_codes": codes[seq[t]], "category": "c", "price": 1.0, "popularity_count": 0,
                "popularity_log": 0.0, "scenario_text": scen[t], "scenario_embedding": np.zeros(384, np.float32),
                "instruction_text": None if emb is None else "likes things",
                "instruction_embedding": emb, "generator_version": "v0", "generated_at": 0,
                "has_instruction": emb is not None,
            })
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


# ----------------------------------------------------------------------------------------------- encoder
def hand_frame(table: SemanticIdTable) -> pd.DataFrame:
    c = {i: list(map(int, x)) for i, x in zip(table.item_ids, table.codes)}
    emb = np.arange(384, dtype=np.float32) / 384
    return pd.DataFrame({
        "scenario": ["search", "home", "home"],
        "item_id": ["i05", "i06", "i07"],
        "profile_fields": [["age_band=25-34", "region=r1"], ["region=mars", "hobby=x"], None],
        "short_sids": [c["i01"] + c["i02"] + c["i03"], [], np.array(c["i04"])],
        "long_item_ids": [["i01", "zzz", "i02", "i03"], None, np.array(["i09"], dtype=object)],
        "sid_codes": [c["i05"], c["i06"], []],  # row 2: label from the table
        "instruction_embedding": [emb, None, emb],
        "has_instruction": [True, False, False],  # row 2: flagged off (e.g. stale) although present
    })


def test_encode_hand_built_frame():
    table = make_catalog()
    train = pd.DataFrame({"profile_fields": [["age_band=25-34", "region=r1"], ["age_band=18-24", "region=r2"]]})
    enc = ExampleEncoder.fit(train, table, SCENARIOS, EncoderConfig(max_short=2, max_long=10))
    assert enc.fields == ("age_band", "region")
    assert enc.tokens == ("<pad>", "age_band=<unk>", "region=<unk>", "age_band=18-24", "age_band=25-34",
                          "region=r1", "region=r2")
    c = table.codes
    out = enc.encode(hand_frame(table))

    assert out["scenario"].tolist() == [1, 0, 0]
    # profile: position = field; unknown value -> the field's OOV id; unknown field dropped; missing -> 0
    assert out["profile"].tolist() == [[4, 5], [0, 2], [0, 0]]
    # short: reversed (most recent first), last max_short=2 kept; padding masked with zeros
    assert out["short_sids"].shape == (3, 2, 3)
    assert out["short_sids"][0].tolist() == [c[3].tolist(), c[2].tolist()]
    assert out["short_mask"].tolist() == [[True, True], [False, False], [True, False]]
    assert out["short_sids"][2, 0].tolist() == c[4].tolist() and out["short_sids"][2, 1].tolist() == [0, 0, 0]
    # long: unknown "zzz" dropped, reversed, width = longest row
    assert out["long_sids"].shape == (3, 3, 3)
    assert out["long_sids"][0].tolist() == [c[3].tolist(), c[2].tolist(), c[1].tolist()]
    assert out["long_mask"].tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    assert out["long_sids"][2, 0].tolist() == c[9].tolist()
    # instruction: missing or flagged off -> zeros + has_instruction False
    assert out["has_instruction"].tolist() == [True, False, False]
    assert out["instruction_emb"].dtype == torch.float32
    assert torch.allclose(out["instruction_emb"][0], torch.arange(384, dtype=torch.float32) / 384)
    assert out["instruction_emb"][1:].abs().sum() == 0
    # targets: given sid_codes, or the table's codes; target_item = table row
    assert out["target_sids"].tolist() == [c[5].tolist(), c[6].tolist(), c[7].tolist()]
    assert out["target_item"].tolist() == [5, 6, 7]
    assert all(out[k].dtype == torch.long for k in ("scenario", "profile", "short_sids", "long_sids", "target_sids"))


def test_encoded_batch_runs_through_generator():
    table = make_catalog()
    frame = make_frame(table, n_users=4)
    enc = ExampleEncoder.fit(frame[frame.split == "train"], table, SCENARIOS)
    cfg = enc.generator_config(GeneratorConfig(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, igr_top_k=4,
                                               igr_dim=16, igr_hidden=32))
    enc.check_config(cfg)
    out = OxygenGenerator(cfg)(enc.encode(frame))
    assert torch.isfinite(out["loss"])


def test_truncation_keeps_most_recent():
    table = make_catalog()
    frame = make_frame(table, n_users=1, n_events=8, scenarios=("home",))
    enc = ExampleEncoder.fit(frame, table, SCENARIOS, EncoderConfig(max_short=3, max_long=4))
    out = enc.encode(frame.iloc[[7]])
    hist = frame.iloc[7]["long_item_ids"]  # 7 items, oldest first
    want = table.lookup_codes(hist[::-1][:4])
    assert out["long_sids"][0].tolist() == want.tolist()
    assert out["short_sids"][0].tolist() == want[:3].tolist()  # one scenario: short == long history


def test_bad_input_errors():
    table = make_catalog()
    frame = hand_frame(table)
    enc = ExampleEncoder.fit(pd.DataFrame({"profile_fields": [["a=1"]]}), table, SCENARIOS)
    with pytest.raises(ValueError, match="unknown scenario.*'mars_scenario'"):
        enc.encode(frame.assign(scenario=["home", "mars_scenario", "home"]))
    with pytest.raises(ValueError, match="missing column.*long_item_ids"):
        enc.encode(frame.drop(columns="long_item_ids"))
    with pytest.raises(ValueError, match="short_sids row 0 has 2 codes"):
        enc.encode(frame.assign(short_sids=[[1, 2], [], []]))
    with pytest.raises(ValueError, match="instruction_embedding row 1 has 3 values"):
        enc.encode(frame.assign(instruction_embedding=[None, [1.0, 2.0, 3.0], None]))
    bad = [list(map(int, table.codes[4])), [], []]  # i05's label says i04: features from another SID table
    with pytest.raises(ValueError, match="another SID table version"):
        enc.encode(frame.assign(sid_codes=bad))
    with pytest.raises(ValueError, match="not in the SID table"):
        enc.encode(frame.assign(item_id=["i05", "i06", "nope"]))
    with pytest.raises(ValueError, match="outside the SID table vocab"):
        enc.encode(frame.assign(short_sids=[[9, 0, 0], [], []]))


def test_save_load_roundtrip(tmp_path):
    table = make_catalog()
    frame = make_frame(table, n_users=5)
    enc = ExampleEncoder.fit(frame, table, SCENARIOS, EncoderConfig(min_count=2))
    path = enc.save(tmp_path / "enc.json")
    back = ExampleEncoder.load(path, table)
    assert back.to_dict() == enc.to_dict()
    a, b = enc.encode(frame), back.encode(frame)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # region=r0..r2 seen 12 (>= min_count) times, but a value seen once maps to OOV
    rare = ExampleEncoder.fit(pd.DataFrame({"profile_fields": [["a=1"], ["a=1"], ["a=2"]]}), table, SCENARIOS,
                              EncoderConfig(min_count=2))
    assert rare.tokens == ("<pad>", "a=<unk>", "a=1")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        ExampleEncoder.load(tmp_path / "bad.json", table)
    other = make_catalog(40)  # 40 items on 16 code pairs: disambiguation size 3, not 2
    assert tuple(other.vocab_sizes) != tuple(table.vocab_sizes)
    with pytest.raises(ValueError, match="vocab_sizes"):
        ExampleEncoder.load(path, other)


def test_arrow_list_columns_match_object_columns():
    table = make_catalog()
    frame = make_frame(table, n_users=3)
    enc = ExampleEncoder.fit(frame, table, SCENARIOS)
    arrow = frame.copy()
    import pyarrow as pa

    for col, t in (("profile_fields", pa.string()), ("short_sids", pa.int64()), ("long_item_ids", pa.string())):
        arrow[col] = pd.Series(pa.array(frame[col].tolist(), type=pa.list_(t)), dtype=pd.ArrowDtype(pa.list_(t)))
    a, b = enc.encode(frame), enc.encode(arrow)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------- data module
def test_datamodule_splits_and_deterministic_order():
    table = make_catalog()
    frame = make_frame(table, n_users=6)
    dm = GeneratorDataModule.from_frames(frame, table, SCENARIOS, batch_size=4, seed=3)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 6 * 4, "valid": 6, "test": 6}
    batch = next(iter(dm.train_dataloader()))
    assert batch["short_sids"].shape[0] == 4 and batch["scenario"].dtype == torch.long

    s1, s2 = EpochShuffleSampler(20, seed=3), EpochShuffleSampler(20, seed=3)
    assert list(s1) == list(s2) and sorted(s1) == list(range(20))
    s2.set_epoch(1)
    assert list(s1) != list(s2)  # a new order every epoch, a function of (seed, epoch) only
    with pytest.raises(ValueError, match="'valid' split is empty"):
        GeneratorDataModule.from_frames(frame[frame.split != "valid"], table, SCENARIOS).setup()
