"""Self-contained model versions without a server (models/export/version_client.py, repository.py): the client
metadata round trip, inputs built from the version's own SID table, tampering and mismatches caught, pinned
configs; and the bounded request log the canary replays (triton_repo/request_log.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from models.export import (
    ServingConfig,
    VersionClient,
    VersionMismatchError,
    config_interface,
    pinned_config,
    publish_version,
    render_config,
    serving_identity_of,
    serving_version_of,
    interface,
    write_model_repository,
)
from models.export.version_client import sid_table_sha256, write_client_files
from models.features.example_encoder import EncoderConfig, ExampleEncoder
from models.nn import GeneratorConfig
from models.semantic_ids import SemanticIdTable
from models.semantic_ids.trie import SIDTrie
from triton_repo.request_log import RequestLog

from .test_export import spread

pytestmark = pytest.mark.usefixtures("one_thread")
GEN = "oxygenrec_generate"


def table(seed: int = 0, n: int = 60) -> SemanticIdTable:
    rng = np.random.default_rng(seed)
    codes = np.unique(np.stack([rng.integers(0, 8, 4 * n) for _ in range(3)], 1), axis=0)[:n]
    codes = np.concatenate([codes, np.zeros((n, 1), np.int64)], 1)
    return SemanticIdTable(np.array([f"i{j:03d}" for j in range(n)], dtype=object), codes[rng.permutation(n)],
                           f"cb-{seed}", (8, 8, 8))


def frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [f"u{j}" for j in range(n)],
        "scenario": ["cart", "feed", "cart"][:n],
        "profile_fields": [["age=20s", "region=n"], ["age=30s"], []][:n],
        "short_item_ids": [["i001", "i002", "nope"], ["i010"], []][:n],
        "short_sids": [[9] * 12, [9] * 4, []][:n],  # stale codes from another codebook: must be ignored
        "long_item_ids": [["i003", "i004"], ["i005", "unknown"], []][:n],
        "instruction_embedding": [np.ones(384, np.float32), None, None][:n],
        "has_instruction": [True, False, False][:n],
    })


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A version exported with its example encoder: (version dir, encoder, generator)."""
    from models.nn import OxygenGenerator

    sid = table()
    encoder = ExampleEncoder.fit(frame(), sid, ["cart", "feed"], EncoderConfig(max_short=5, max_long=9,
                                                                                max_profile_fields=3))
    cfg = encoder.generator_config(GeneratorConfig(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, igr_top_k=4,
                                                   igr_dim=16, igr_hidden=32, seed=0))
    model = spread(OxygenGenerator(cfg))
    out = tmp_path_factory.mktemp("version") / "repo"
    dirs = write_model_repository(out, 1, model, SIDTrie.from_codes(sid.codes, sid.vocab_sizes), sid.item_ids,
                                  encoder=encoder)
    return dirs[GEN], encoder, model


def test_a_version_carries_what_its_clients_need(version):
    vdir, encoder, model = version
    client = VersionClient.load(vdir)
    assert client.version == 1 and client.scenarios == ("cart", "feed")
    assert client.encoder.tokens == encoder.tokens and client.config == model.cfg
    assert np.array_equal(client.sid_table.codes, encoder.sid_table.codes)
    meta = json.loads((vdir / "client.json").read_text())
    assert meta["sid_table"]["codebook_version"] == "cb-0"
    assert meta["sid_table"]["sha256"] == sid_table_sha256(encoder.sid_table.item_ids, encoder.sid_table.codes)
    manifest = json.loads((vdir / "manifest.json").read_text())
    assert {"client.json", "sid_codes.npy"} <= set(manifest["files"])


def test_inputs_use_the_versions_own_sid_table_for_the_short_history(version):
    vdir, encoder, model = version
    client = VersionClient.load(vdir)
    rows = frame()
    arrays = client.inputs(rows)
    sid = encoder.sid_table
    # row 0: i002 newest first, then i001; "nope" (not in this version's table) dropped; the stale codes ignored
    expected = sid.codes[sid._item_index.get_indexer(["i002", "i001"])]
    assert np.array_equal(arrays["short_sids"][0, :2], expected) and arrays["short_mask"][0].tolist()[:3] == [1, 1, 0]
    assert not arrays["short_mask"][2].any() and arrays["scenario"].tolist() == [0, 1, 0]
    assert arrays["has_instruction"].tolist() == [True, False, False]
    assert arrays["short_sids"].shape[1:] == (model.cfg.max_short, 4)


def test_inputs_measure_the_instruction_age_to_the_request(version):
    client = VersionClient.load(version[0])
    now = 1_700_000_000
    rows = frame().assign(generated_at=pd.array([now - 2 * 86_400, None, now], dtype="Int64"))
    assert client.inputs(rows, now=now)["instruction_age"].tolist() == [2.0, -1.0, -1.0]  # rows 1, 2: no instruction
    # replayed examples keep their own time; rows without one are measured to now
    rows["target_timestamp"] = [now - 86_400, None, None]
    assert client.inputs(rows, now=now)["instruction_age"].tolist() == [1.0, -1.0, -1.0]
    assert (client.inputs(frame())["instruction_age"] == -1).all()  # no generated_at: no age


def test_tampered_or_mismatched_versions_are_errors(version, tmp_path):
    vdir, encoder, model = version
    copy = tmp_path / "1"
    shutil.copytree(vdir, copy)
    codes = np.load(copy / "sid_codes.npy")
    np.save(copy / "sid_codes.npy", codes[::-1].copy())
    with pytest.raises(VersionMismatchError, match="sid_codes.npy does not match manifest.json"):
        VersionClient.load(copy)
    (copy / "client.json").unlink()
    with pytest.raises(VersionMismatchError, match="client.json does not match manifest.json"):
        VersionClient.load(copy)
    client = VersionClient.load(vdir)
    with pytest.raises(VersionMismatchError, match=r"reads online feature\(s\) \['long_item_ids'\]"):
        client.inputs(frame().drop(columns=["long_item_ids"]))
    with pytest.raises(ValueError, match=r"unknown scenario\(s\) \['moon'\]"):
        client.inputs(frame().assign(scenario="moon"))
    # the encoder's table must list the exported catalog rows in order
    with pytest.raises(VersionMismatchError, match="does not list the exported catalog rows in order"):
        write_client_files(tmp_path / "x", encoder, model.cfg, encoder.sid_table.item_ids[::-1])


def test_a_version_exported_without_its_encoder_cannot_serve_clients(tmp_path):
    from models.nn import OxygenGenerator

    sid = table()
    cfg = GeneratorConfig(vocab_sizes=sid.vocab_sizes, n_scenarios=2, profile_vocab_size=8, n_profile_fields=3,
                          d_model=16, n_heads=2, enc_layers=1, dec_layers=1, max_short=5, max_long=9, igr_top_k=4,
                          igr_dim=8, igr_hidden=16)
    dirs = write_model_repository(tmp_path, 1, OxygenGenerator(cfg).eval(), SIDTrie.from_codes(sid.codes, sid.vocab_sizes),
                                  sid.item_ids)
    with pytest.raises(VersionMismatchError, match="carries no client.json"):
        VersionClient.load(dirs[GEN])


def test_pinned_configs_change_only_policy_and_serving_lines(version, tmp_path):
    vdir, _, model = version
    text = render_config(GEN, interface(model.cfg)["constants"], ServingConfig())
    pinned = pinned_config(text, GEN + "__candidate", [3, 4], 3, "ab" * 32)
    assert 'name: "oxygenrec_generate__candidate"' in pinned
    assert "version_policy: { specific { versions: [ 3, 4 ] } }" in pinned
    assert serving_version_of(pinned) == 3 and serving_identity_of(pinned) == "ab" * 32
    again = pinned_config(pinned, GEN, [4], 4)
    assert serving_version_of(again) == 4 and serving_identity_of(again) is None and again.count("SERVING_VERSION") == 1
    assert config_interface(text) == config_interface(pinned) == config_interface(again)
    assert config_interface(text) != config_interface(text.replace("TYPE_INT64", "TYPE_INT32", 1))
    with pytest.raises(ValueError, match="serving version 5 is not among the loaded versions"):
        pinned_config(text, GEN, [4], 5)
    with pytest.raises(ValueError, match="already exists: never rewrite a published version"):
        publish_version(vdir.parent.parent, vdir, GEN, version=1)


def test_request_log_is_bounded_and_skips_torn_lines(tmp_path):
    log = RequestLog(tmp_path / "requests.jsonl", max_bytes=2048)
    for i in range(200):
        log.append(f"u{i}", "cart", version=1, ts=1000.0 + i)
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert size <= 2 * 2048 + 200  # two files of about max_bytes
    recent = log.recent(5)
    assert [r["user_id"] for r in recent] == ["u195", "u196", "u197", "u198", "u199"]
    assert recent[-1] == {"user_id": "u199", "scenario": "cart", "ts": 1199.0, "version": "1"}
    with open(log.path, "ab") as f:
        f.write(b'{"user_id": "torn", "sce')  # a writer killed mid-line
    assert log.recent(1)[0]["user_id"] == "u199" and log.recent(0) == []
    assert len(log.recent(10_000)) < 200  # older records were rotated away
    with pytest.raises(ValueError, match="max_bytes must be >= 1024"):
        RequestLog(tmp_path / "x", max_bytes=10)


def test_the_serving_path_never_imports_lightning():
    """The online recommender and its client encode requests with the version's ExampleEncoder
    (models/features/example_encoder.py): none of it may pull in the training stack."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, triton_repo.recommend, triton_repo.client, models.export.version_client, "
            "models.features.example_encoder; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
