"""ONNX export and Triton repository without a server: onnxruntime vs eager parity (encoder outputs, logits of
every decoding depth, several batch sizes and beam counts), ONNX beam search == constrained_beam_search, the
python-backend model.py files run against a fake ``triton_python_backend_utils``, repository layout/publishing."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
import torch

from models.decoding import constrained_beam_search
from models.export import (
    ENCODER_OUTPUTS,
    MODELS,
    ServingConfig,
    example_batch,
    export_onnx,
    interface,
    list_versions,
    load_runtime,
    make_session,
    publish_version,
    read_manifest,
    remove_version,
    render_config,
    serving_arrays,
    write_model_repository,
)
from models.export.repository import TEMPLATES_DIR
from models.nn import GeneratorConfig, OxygenGenerator
from models.semantic_ids.trie import SIDTrie

VOCAB = (16, 16, 16, 4)


# tiny tensors: one intra-op thread (the shared fixture in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**kw) -> GeneratorConfig:
    base = dict(vocab_sizes=VOCAB, n_scenarios=3, profile_vocab_size=40, n_profile_fields=3, d_model=32, n_heads=4,
                enc_layers=1, dec_layers=1, max_short=5, max_long=9, igr_top_k=4, igr_dim=16, igr_hidden=32, seed=0)
    return GeneratorConfig(**{**base, **kw})


def spread(model: OxygenGenerator, seed: int = 0) -> OxygenGenerator:
    """Random weights with O(1) logits: the default init (std 0.02) makes all items near-tied, and a 1e-7
    difference between onnxruntime and torch would then reorder equal-scored items."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / p.shape[-1] ** 0.5)
    return model.eval()


def catalog(n: int = 500, vocab=VOCAB, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.unique(np.stack([rng.integers(0, v, 4 * n) for v in vocab], 1), axis=0)
    return raw[rng.permutation(len(raw))[:n]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = small_cfg()
    model = spread(OxygenGenerator(cfg))
    paths = export_onnx(model, tmp_path_factory.mktemp("onnx"))
    return model, paths


def _torch(arrays: dict) -> dict:
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def check_parity(model: OxygenGenerator, paths: dict, batch_sizes=(1, 3), beams=4) -> None:
    cfg = model.cfg
    enc, step = make_session(paths["encoder"]), make_session(paths["decoder_step"])
    for b in batch_sizes:
        arrays = serving_arrays(example_batch(cfg, b, seed=10 + b), cfg)
        out = dict(zip(ENCODER_OUTPUTS, enc.run(None, arrays)))
        with torch.no_grad():
            memory, mask = model.encode(_torch(arrays))
            np.testing.assert_allclose(out["memory"], memory.numpy(), atol=1e-4, rtol=0)
            assert np.array_equal(out["memory_mask"], mask.numpy())
            assert out["logits"].shape == (b, 1, max(cfg.vocab_sizes))
            # depth 0 (encoder graph), then every later depth from the step graph with `beams` random prefixes
            lg, cache = model.decode_step(memory, mask, torch.zeros(b, 0, dtype=torch.long))
            np.testing.assert_allclose(out["logits"][:, 0, : cfg.vocab_sizes[0]], lg.numpy(), atol=1e-4, rtol=0)
            assert np.isneginf(out["logits"][:, 0, cfg.vocab_sizes[0]:]).all()
            gen = torch.Generator().manual_seed(b)
            codes = torch.stack([torch.randint(0, v, (b * beams,), generator=gen) for v in cfg.vocab_sizes], 1)
            cache = cache.reorder(torch.arange(b).repeat_interleave(beams))
            pk, pv = np.repeat(out["past_k"], beams, 1), np.repeat(out["past_v"], beams, 1)
            for t in range(1, cfg.n_levels):
                lg, cache = model.decode_step(memory, mask, codes[:, :t], cache)
                logits, pk, pv = step.run(None, {"token": codes[:, t - 1].view(b, beams).numpy(), "past_k": pk,
                                                 "past_v": pv, "cross_k": out["cross_k"], "cross_v": out["cross_v"],
                                                 "memory_mask": out["memory_mask"]})
                v = cfg.vocab_sizes[t]
                assert logits.shape == (b, beams, max(cfg.vocab_sizes))
                np.testing.assert_allclose(logits.reshape(b * beams, -1)[:, :v], lg.numpy(), atol=1e-4, rtol=0)
                assert np.isneginf(logits[..., v:]).all()
                assert pk.shape == (b, beams, cfg.dec_layers, cfg.n_heads, cfg.n_prefix + t, cfg.d_model // cfg.n_heads)


def test_encoder_and_step_parity_every_depth(exported):
    model, paths = exported
    check_parity(model, paths, batch_sizes=(1, 2, 5), beams=3)
    check_parity(model, paths, batch_sizes=(4,), beams=1)


@pytest.mark.parametrize("kw", [dict(ffn="moe", n_experts=3, moe_top_k=2, dec_layers=2),
                                dict(instruction_position="left_of_bos", use_igr=False),
                                dict(instruction_position="none", enc_layers=2),
                                dict(n_recent=3), dict(n_recent=3, use_igr=False),
                                dict(history_encoder="causal", item_buckets=64, enc_layers=2),
                                dict(history_encoder="causal", ffn="moe", n_experts=3, moe_top_k=2),
                                dict(instruction_age=True),
                                dict(history_encoder="causal", item_buckets=64, instruction_age=True)])
def test_parity_other_architectures(kw, tmp_path):
    model = spread(OxygenGenerator(small_cfg(**kw)))
    check_parity(model, export_onnx(model, tmp_path), batch_sizes=(1, 3), beams=2)


def test_onnx_beam_search_reproduces_constrained_beam_search(exported):
    model, paths = exported
    cfg = model.cfg
    codes = catalog(500)
    trie = SIDTrie.from_codes(codes, VOCAB)
    rt = load_runtime()
    gen = rt.OnnxGenerator(paths["encoder"], paths["decoder_step"], interface(cfg)["constants"])
    for b, w, k in ((1, 1, 1), (3, 8, 5), (4, 64, 64), (2, 300, 100)):
        arrays = serving_arrays(example_batch(cfg, b, seed=b, codes=codes), cfg)
        items, scores = rt.beam_search(gen, trie, arrays, w, k)
        ref_items, ref_scores = constrained_beam_search(model, _torch(arrays), trie, w, k)
        assert torch.equal(items, ref_items), (b, w, k)
        torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)
        assert ((items >= 0) & (items < len(codes))).all()


def test_beam_search_pads_when_catalog_is_smaller_than_top_k(exported, tmp_path):
    model, paths = exported
    codes = catalog(6, seed=3)
    trie = SIDTrie.from_codes(codes, VOCAB)
    rt = load_runtime()
    gen = rt.OnnxGenerator(paths["encoder"], paths["decoder_step"], interface(model.cfg)["constants"])
    arrays = serving_arrays(example_batch(model.cfg, 2, seed=1), model.cfg)
    items, scores = rt.beam_search(gen, trie, arrays, 16, 10)
    ref_items, ref_scores = constrained_beam_search(model, _torch(arrays), trie, 16, 10)
    assert torch.equal(items, ref_items)
    assert (items[:, 6:] == -1).all() and torch.isneginf(scores[:, 6:]).all()
    assert sorted(items[0, :6].tolist()) == list(range(6))
    with pytest.raises(ValueError, match="top_k"):
        rt.beam_search(gen, trie, arrays, 4, 5)


def test_serving_arrays_padding_does_not_change_results():
    model = spread(OxygenGenerator(small_cfg()))
    cfg = model.cfg
    codes = catalog(200)
    trie = SIDTrie.from_codes(codes, VOCAB)
    full = example_batch(cfg, 3, seed=4, codes=codes)
    short = {k: (v[:, :2] if k in ("short_sids", "short_mask", "profile", "profile_mask") else v) for k, v in full.items()}
    short["long_sids"], short["long_mask"] = full["long_sids"][:, :5], full["long_mask"][:, :5]
    short.pop("profile_mask")
    padded = serving_arrays(short, cfg)
    assert padded["profile"].shape == (3, cfg.n_profile_fields) and padded["long_sids"].shape == (3, cfg.max_long, 4)
    assert padded["profile_mask"].dtype == bool and padded["scenario"].dtype == np.int64
    a = constrained_beam_search(model, short, trie, 16, 8)
    b = constrained_beam_search(model, _torch(padded), trie, 16, 8)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="short_sids"):
        serving_arrays({**full, "short_sids": torch.zeros(3, cfg.max_short + 1, 4, dtype=torch.long),
                        "short_mask": torch.ones(3, cfg.max_short + 1, dtype=torch.bool)}, cfg)
    assert serving_arrays(short, cfg, pad=False)["long_sids"].shape == (3, 5, 4)
    tiny = {**short, "long_sids": full["long_sids"][:, :2], "long_mask": full["long_mask"][:, :2]}
    with pytest.raises(ValueError, match="'long_sids' with at least 4 slots"):
        serving_arrays(tiny, cfg, pad=False)


def test_runtime_input_checks_name_the_problem():
    cfg = small_cfg()
    rt = load_runtime()
    c = interface(cfg)["constants"]
    good = serving_arrays(example_batch(cfg, 2, seed=0), cfg)
    assert rt.check_encoder_inputs(good, c) == 2
    cases = [({"scenario": np.array([0, 7])}, "scenario values"),
             ({"short_sids": np.full((2, cfg.max_short, 4), 99), "short_mask": np.ones((2, cfg.max_short), bool)}, "short_sids"),
             ({"long_sids": good["long_sids"][:, :2], "long_mask": good["long_mask"][:, :2]}, "long_sids has 2 slots"),
             ({"instruction_emb": np.zeros((2, 5), np.float32)}, "instruction_emb must have shape"),
             ({"profile_mask": good["profile_mask"][:, :1]}, "profile_mask shape")]
    for patch, msg in cases:
        with pytest.raises(ValueError, match=msg):
            rt.check_encoder_inputs({**good, **patch}, c)


# ------------------------------------------------------------------------------------------ repository
@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported):
    model, _ = exported
    codes = catalog(300)
    trie = SIDTrie.from_codes(codes, VOCAB)
    ids = [f"sku-{i:04d}-é" for i in range(len(codes))]
    root = tmp_path_factory.mktemp("repo")
    dirs = write_model_repository(root, 1, model, trie, ids, ServingConfig(max_batch_size=4, version_policy="latest:2"))
    return root, dirs, model, trie, codes, ids


def test_repository_layout_and_manifest(repo):
    root, dirs, model, trie, codes, ids = repo
    expected = {"oxygenrec_encoder": {"model.py", "model.onnx"}, "oxygenrec_decoder_step": {"model.py", "model.onnx"},
                "oxygenrec_generate": {"model.py", "encoder.onnx", "decoder_step.onnx", "trie.npz", "items.json", "sid_trie.py"}}
    assert set(dirs) == set(MODELS)
    for model_name, files in expected.items():
        vdir = root / model_name / "1"
        assert dirs[model_name] == vdir
        assert files | {"oxygenrec_runtime.py", "manifest.json"} == {p.name for p in vdir.iterdir()}
        cfg_text = (root / model_name / "config.pbtxt").read_text()
        assert f'name: "{model_name}"' in cfg_text and "max_batch_size: 4" in cfg_text
        assert "latest { num_versions: 2 }" in cfg_text and "${" not in cfg_text
        manifest = read_manifest(vdir)
        assert manifest["model"] == model_name and manifest["version"] == 1
        assert set(manifest["files"]) == files | {"oxygenrec_runtime.py"}
        assert manifest["generator_config"] == model.cfg.to_dict()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # staging cleaned up
    gdir = root / "oxygenrec_generate" / "1"
    assert json.loads((gdir / "items.json").read_text()) == ids
    with np.load(gdir / "trie.npz") as arrays:
        assert torch.equal(SIDTrie.from_arrays(arrays).lookup(torch.as_tensor(codes)), torch.arange(len(codes)))
    with pytest.raises(ValueError, match="already exists"):
        write_model_repository(root, 1, model, trie, ids)
    with pytest.raises(ValueError, match="item_ids has 2 entries"):
        write_model_repository(root, 2, model, trie, ["a", "b"])


def test_render_config_policies_and_errors():
    c = interface(small_cfg())["constants"]
    assert "all { }" in render_config("oxygenrec_generate", c, ServingConfig(version_policy="all"))
    assert "specific { versions: [ 1, 3 ] }" in render_config("oxygenrec_encoder", c, ServingConfig(version_policy="specific:1,3"))
    text = render_config("oxygenrec_decoder_step", c, ServingConfig(instance_count=2, max_queue_delay_us=50))
    assert "count: 2 kind: KIND_CPU" in text and "max_queue_delay_microseconds: 50" in text
    with pytest.raises(ValueError, match="version_policy"):
        ServingConfig(version_policy="newest")
    with pytest.raises(ValueError, match="unknown model"):
        render_config("nope", c, ServingConfig())


def test_publish_and_remove_versions(repo, tmp_path):
    root, dirs, *_ = repo
    live = tmp_path / "live"
    staged = dirs["oxygenrec_encoder"]
    assert publish_version(live, staged, "oxygenrec_encoder") == 1
    assert publish_version(live, staged, "oxygenrec_encoder") == 2
    assert list_versions(live, "oxygenrec_encoder") == [1, 2]
    assert (live / "oxygenrec_encoder" / "config.pbtxt").read_text() == (root / "oxygenrec_encoder" / "config.pbtxt").read_text()
    read_manifest(live / "oxygenrec_encoder" / "2")
    assert not [p for p in (live / "oxygenrec_encoder").iterdir() if p.name.startswith(".")]
    remove_version(live, "oxygenrec_encoder", 1)
    assert list_versions(live, "oxygenrec_encoder") == [2]
    assert publish_version(live, staged, "oxygenrec_encoder") == 3  # numbers are never reused
    with pytest.raises(ValueError, match="no version 7"):
        remove_version(live, "oxygenrec_encoder", 7)
    (live / "oxygenrec_encoder" / "config.pbtxt").write_text("changed")
    with pytest.raises(ValueError, match="differs from the live"):
        publish_version(live, staged, "oxygenrec_encoder")
    with pytest.raises(ValueError, match="not a model version directory"):
        publish_version(live, tmp_path, "oxygenrec_encoder")


def test_corrupt_file_is_detected_by_the_manifest(repo, tmp_path):
    root, dirs, *_ = repo
    bad = tmp_path / "bad"
    shutil.copytree(dirs["oxygenrec_generate"], bad)
    data = bytearray((bad / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "encoder.onnx").write_bytes(bytes(data))
    rt = load_runtime()
    with pytest.raises(rt.ModelFilesError, match="encoder.onnx does not match manifest.json"):
        read_manifest(bad)
    (bad / "encoder.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(rt.ModelFilesError, match="onnxruntime cannot load"):
        rt.make_session(bad / "encoder.onnx")


# ------------------------------------------------------------------------------------------ model.py with a fake pb_utils
class _FakeTensor:
    def __init__(self, name, t: torch.Tensor):
        self.name, self.t = name, t

    def __dlpack__(self, *args, **kw):
        return self.t.__dlpack__(*args, **kw)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()

    @classmethod
    def from_dlpack(cls, name, t):
        assert isinstance(t, torch.Tensor) and t.is_contiguous()
        return cls(name, t.clone())

    def as_numpy(self):  # pragma: no cover - forbidden under numpy 2
        raise AssertionError("as_numpy() must not be used (broken under numpy 2)")


class _FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.t for t in output_tensors}
        self.error = error


def _fake_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = _FakeTensor
    pb.InferenceResponse = _FakeResponse
    pb.TritonError = lambda msg: msg
    pb.get_input_tensor_by_name = lambda request, name: request.get(name)
    return pb


def _load_model_py(vdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    rt = load_runtime()
    mod = rt.import_file(vdir / "model.py", f"model_py_{vdir.parent.name}")
    model = mod.TritonPythonModel()
    cfg_text = (vdir.parent / "config.pbtxt").read_text()
    assert "ORT_THREADS" in cfg_text
    model.initialize({"model_repository": str(vdir.parent), "model_version": vdir.name, "model_name": vdir.parent.name,
                      "model_config": json.dumps({"parameters": {"ORT_THREADS": {"string_value": "1"}}})})
    return model


def _request(arrays: dict, **extra) -> dict:
    req = {k: _FakeTensor(k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in arrays.items()}
    for k, v in extra.items():
        req[k] = _FakeTensor(k, torch.from_numpy(v))
    return req


def test_generate_model_py_batches_requests_and_matches_eager(repo, monkeypatch):
    root, dirs, model, trie, codes, ids = repo
    cfg = model.cfg
    gen_model = _load_model_py(dirs["oxygenrec_generate"], monkeypatch)
    reqs, refs = [], []
    for i, (b, w, k) in enumerate(((2, 16, 5), (1, 16, 5), (3, 32, 7))):
        arrays = serving_arrays(example_batch(cfg, b, seed=20 + i, codes=codes), cfg)
        refs.append(constrained_beam_search(model, _torch(arrays), trie, w, k))
        arrays["scenario"], arrays["has_instruction"] = arrays["scenario"][:, None], arrays["has_instruction"][:, None]
        reqs.append(_request(arrays, beam_width=np.full((b, 1), w, np.int32), top_k=np.full((b, 1), k, np.int32)))
    bad = dict(reqs[1])
    bad["scenario"] = _FakeTensor("scenario", torch.tensor([[9]]))
    responses = gen_model.execute(reqs + [bad])
    for resp, (items, scores) in zip(responses, refs):
        assert resp.error is None
        assert torch.equal(resp.outputs["item_index"], items)
        torch.testing.assert_close(resp.outputs["score"], scores, atol=1e-4, rtol=0)
        decoded = [[bytes(r.numpy()).rstrip(b"\0").decode() for r in user] for user in resp.outputs["item_id"]]
        assert decoded == [[ids[i] for i in user] for user in items.tolist()]
    assert responses[-1].error is not None and "scenario values must be in [0, 3)" in responses[-1].error


def test_encoder_and_step_model_py(repo, monkeypatch):
    root, dirs, model, *_ = repo
    cfg = model.cfg
    enc = _load_model_py(dirs["oxygenrec_encoder"], monkeypatch)
    step = _load_model_py(dirs["oxygenrec_decoder_step"], monkeypatch)
    arrays = serving_arrays(example_batch(cfg, 2, seed=5), cfg)
    req = dict(arrays, scenario=arrays["scenario"][:, None], has_instruction=arrays["has_instruction"][:, None])
    (out,) = enc.execute([_request(req)])
    assert out.error is None and set(out.outputs) == set(ENCODER_OUTPUTS)
    with torch.no_grad():
        memory, mask = model.encode(_torch(arrays))
        lg0, cache = model.decode_step(memory, mask, torch.zeros(2, 0, dtype=torch.long))
        lg1, _ = model.decode_step(memory, mask, torch.tensor([[3], [5]]), cache)
    torch.testing.assert_close(out.outputs["memory"], memory, atol=1e-4, rtol=0)
    o = out.outputs
    feeds = {"token": np.array([[3], [5]]), "past_k": o["past_k"].numpy(), "past_v": o["past_v"].numpy(),
             "cross_k": o["cross_k"].numpy(), "cross_v": o["cross_v"].numpy(), "memory_mask": o["memory_mask"].numpy()}
    (res, bad) = step.execute([_request(feeds), _request({**feeds, "token": np.array([[3], [99]])})])
    assert res.error is None
    torch.testing.assert_close(res.outputs["logits"][:, 0, : VOCAB[1]], lg1, atol=1e-4, rtol=0)
    assert "token values must be in [0, 16)" in bad.error


def test_templates_follow_the_numpy2_rules():
    runtime = (TEMPLATES_DIR / "common" / "oxygenrec_runtime.py").read_text()
    assert "torch.from_dlpack(" in runtime and "Tensor.from_dlpack(" in runtime
    for src in ((TEMPLATES_DIR / "common" / "model.py").read_text(), runtime):
        assert "as_numpy(" not in src and "pb_utils.Tensor(" not in src
    for model in MODELS:
        config = (TEMPLATES_DIR / model / "config.pbtxt.tmpl").read_text()
        assert "TYPE_STRING" not in config and "TYPE_BYTES" not in config


def test_verify_staged_version_passes_a_good_export_and_names_a_corrupt_file(repo, tmp_path):
    from models.export.verify import verify_staged_version

    root, _, model, trie, codes, _ = repo
    arrays = serving_arrays(example_batch(model.cfg, 3, seed=5, codes=codes), model.cfg)
    good = verify_staged_version(root, 1, model, trie, arrays, beam_width=16, top_k=10)
    assert good.passed and good.items_equal and good.max_score_diff <= 1e-4 and good.users == 3

    broken = tmp_path / "repo"
    shutil.copytree(root, broken)
    graph = broken / "oxygenrec_generate" / "1" / "decoder_step.onnx"
    graph.write_bytes(graph.read_bytes()[:-50])
    report = verify_staged_version(broken, 1, model, trie, arrays, beam_width=16, top_k=10)
    assert not report.passed and "decoder_step.onnx" in report.problem

    other = spread(OxygenGenerator(model.cfg), seed=99)  # not the model that was exported: answers differ
    mismatch = verify_staged_version(root, 1, other, trie, arrays, beam_width=16, top_k=10)
    assert not mismatch.passed and "other items than the eager model" in mismatch.problem
