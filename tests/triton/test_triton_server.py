"""Against a REAL tritonserver (CPU, python backend, from the PyPI wheel): the generate model reproduces the
in-process constrained beam search over HTTP and gRPC, returns only valid catalog rows, the standalone encoder
and decoder-step models match the eager generator, a broken new version fails to load while the previous one
keeps serving, and the server only listens on 127.0.0.1."""

from __future__ import annotations

import shutil
import sysconfig
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from models.decoding import constrained_beam_search
from models.export import ENCODER_OUTPUTS, example_batch, list_versions, publish_version, remove_version, serving_arrays
from triton_repo import TritonRecommender, TritonServerError


def _inputs(served, b: int, seed: int) -> dict[str, np.ndarray]:
    return serving_arrays(example_batch(served.model.cfg, b, seed=seed, codes=served.codes), served.model.cfg)


def _expected(served, arrays, beam: int, top_k: int):
    items, scores = constrained_beam_search(served.model, {k: torch.from_numpy(v) for k, v in arrays.items()},
                                            served.trie, beam, top_k)
    return items.numpy(), scores.numpy()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_generate_equals_in_process_beam_search(served, protocol):
    url = served.server.http_url if protocol == "http" else served.server.grpc_url
    with TritonRecommender(url, protocol=protocol) as rec:
        for b, beam, top_k, seed in ((1, 1, 1, 1), (5, 16, 10, 2), (3, 64, 64, 3), (11, 32, 8, 4)):  # 11 > max_batch 8
            arrays = _inputs(served, b, seed)
            items, scores = rec.recommend(arrays, beam_width=beam, top_k=top_k)
            ref_items, ref_scores = _expected(served, arrays, beam, top_k)
            assert items.shape == (b, top_k) and scores.dtype == np.float32
            np.testing.assert_array_equal(items, ref_items)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-4, rtol=0)
            assert rec.last_item_ids == [[served.item_ids[i] for i in row] for row in items]


def test_concurrent_requests_are_batched_and_answered_correctly(served):
    """Requests from several clients at once: Triton's dynamic batcher hands them to one execute(), the model
    runs compatible ones as one beam search and splits the answers back per request."""
    inputs = [_inputs(served, 1 + i % 2, seed=30 + i) for i in range(8)]
    expected = [_expected(served, a, 16, 6) for a in inputs]
    before = served.server.inference_stats("oxygenrec_generate")["batching"]
    barrier = threading.Barrier(4)
    results: dict[int, tuple] = {}

    def worker(t: int) -> None:
        with TritonRecommender(served.server.http_url) as rec:
            for i in (t, t + 4):
                barrier.wait(timeout=60)
                results[i] = rec.recommend(inputs[i], beam_width=16, top_k=6)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == list(range(8))
    for i, (items, scores) in results.items():
        np.testing.assert_array_equal(items, expected[i][0])
        np.testing.assert_allclose(scores, expected[i][1], atol=1e-4, rtol=0)
    after = served.server.inference_stats("oxygenrec_generate")["batching"]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 12 and executions < 8  # 12 users in 8 requests, some of them executed together


def test_returned_items_are_valid_unique_catalog_rows(served):
    arrays = _inputs(served, 8, seed=7)
    with TritonRecommender(served.server.http_url) as rec:
        items, scores = rec.recommend(arrays, beam_width=128, top_k=50)
    assert ((items >= 0) & (items < len(served.codes))).all()
    assert all(len(set(row)) == 50 for row in items.tolist())
    assert (np.diff(scores, axis=1) <= 1e-6).all() and (scores < 0).all()
    # the returned rows are the catalog's codes, i.e. valid trie paths
    assert torch.equal(served.trie.lookup(torch.as_tensor(served.codes[items.reshape(-1)])), torch.as_tensor(items.reshape(-1)))


def test_bad_requests_get_clear_errors(served):
    arrays = _inputs(served, 2, seed=8)
    with TritonRecommender(served.server.http_url) as rec:
        with pytest.raises(InferenceServerException, match=r"scenario values must be in \[0, 3\)"):
            rec.recommend({**arrays, "scenario": np.array([0, 5])}, beam_width=4, top_k=2)
        with pytest.raises(InferenceServerException, match="top_k <= beam_width"):
            rec.recommend(arrays, beam_width=4, top_k=5)
        items, _ = rec.recommend(arrays, beam_width=4, top_k=2)  # the model still serves
        assert items.shape == (2, 2)


def test_encoder_and_decoder_step_models_match_the_eager_generator(served):
    model = served.model
    arrays = _inputs(served, 3, seed=9)
    client = httpclient.InferenceServerClient(served.server.http_url)
    try:
        def infer(name, feeds, outputs):
            ins = []
            for k, v in feeds.items():
                dtype = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32", np.dtype(bool): "BOOL"}[v.dtype]
                inp = httpclient.InferInput(k, list(v.shape), dtype)
                inp.set_data_from_numpy(np.ascontiguousarray(v), binary_data=True)
                ins.append(inp)
            res = client.infer(name, ins, outputs=[httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs])
            return {o: res.as_numpy(o) for o in outputs}

        feeds = dict(arrays, **{k: arrays[k][:, None] for k in ("scenario", "has_instruction", "instruction_age")})
        enc = infer("oxygenrec_encoder", feeds, ENCODER_OUTPUTS)
        tokens = torch.tensor([[1, 2], [3, 4], [5, 6]])  # two beams per user at level 0
        step = infer("oxygenrec_decoder_step", {
            "token": tokens.numpy(), "past_k": np.repeat(enc["past_k"], 2, 1), "past_v": np.repeat(enc["past_v"], 2, 1),
            "cross_k": enc["cross_k"], "cross_v": enc["cross_v"], "memory_mask": enc["memory_mask"]},
            ("logits", "present_k", "present_v"))
    finally:
        client.close()
    with torch.no_grad():
        memory, mask = model.encode({k: torch.from_numpy(v) for k, v in arrays.items()})
        lg0, cache = model.decode_step(memory, mask, torch.zeros(3, 0, dtype=torch.long))
        lg1, _ = model.decode_step(memory, mask, tokens.reshape(6, 1), cache.reorder(torch.tensor([0, 0, 1, 1, 2, 2])))
    np.testing.assert_allclose(enc["memory"], memory.numpy(), atol=1e-4, rtol=0)
    assert np.array_equal(enc["memory_mask"], mask.numpy())
    np.testing.assert_allclose(enc["logits"][:, 0, :16], lg0.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(step["logits"].reshape(6, -1)[:, :16], lg1.numpy(), atol=1e-4, rtol=0)
    assert step["present_k"].shape[:2] == (3, 2) and step["present_k"].shape[4] == model.cfg.n_prefix + 1


def test_broken_version_fails_to_load_and_previous_keeps_serving(served, tmp_path):
    server, repo, name = served.server, served.repo, "oxygenrec_generate"
    arrays = _inputs(served, 4, seed=11)
    with TritonRecommender(server.http_url) as rec:
        before = rec.recommend(arrays, beam_width=32, top_k=16)
        staged = tmp_path / name / "1"
        shutil.copytree(repo / name / "1", staged, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(repo / name / "config.pbtxt", tmp_path / name / "config.pbtxt")
        onnx = staged / "encoder.onnx"
        onnx.write_bytes(onnx.read_bytes()[:200] + b"\x00garbage" * 64)  # truncated/corrupt model file
        version = publish_version(repo, staged, name)
        assert version == 2 and list_versions(repo, name) == [1, 2]
        with pytest.raises(TritonServerError) as err:
            server.load(name)
        msg = str(err.value)
        assert "version 2" in msg and "encoder.onnx does not match manifest.json" in msg
        assert server.model_ready(name, 1) and not server.model_ready(name, 2)
        after = rec.recommend(arrays, beam_width=32, top_k=16)
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])
        # rollback: drop the broken version; the model still serves version 1
        remove_version(repo, name, 2)
        assert list_versions(repo, name) == [1]
        assert server.model_ready(name, 1)
        np.testing.assert_array_equal(rec.recommend(arrays, beam_width=32, top_k=16)[0], before[0])


def test_a_version_with_instruction_age_reads_the_optional_input(served, tmp_path):
    """Same config.pbtxt for every model (instruction_age is an optional input): a version whose generator reads
    the age answers like the eager model with the age, and requests without it count as "no age"."""
    import dataclasses

    from models.export import ServingConfig, write_model_repository
    from models.nn import OxygenGenerator

    from .conftest import small_generator

    server, repo, name = served.server, served.repo, "oxygenrec_generate"
    base = small_generator(seed=3)
    model = OxygenGenerator(dataclasses.replace(base.cfg, instruction_age=True))
    model.load_state_dict(base.state_dict(), strict=False)  # + the age embedding (its own init)
    with torch.no_grad():
        model.age_emb.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    model.eval()
    staged = write_model_repository(tmp_path, 1, model, served.trie, served.item_ids,
                                    ServingConfig(max_batch_size=8, max_queue_delay_us=5000))[name]
    version = publish_version(repo, staged, name)
    try:
        server.load(name)
        arrays = _inputs(served, 4, seed=12)
        arrays["has_instruction"][:] = True
        with TritonRecommender(server.http_url, version=str(version)) as rec:
            for ages in (arrays["instruction_age"], None):
                sent = arrays if ages is not None else {k: v for k, v in arrays.items() if k != "instruction_age"}
                items, scores = rec.recommend(sent, beam_width=16, top_k=8)
                ref = dict(arrays, instruction_age=ages if ages is not None else np.full(4, -1.0, np.float32))
                want = constrained_beam_search(model, {k: torch.from_numpy(v) for k, v in ref.items()}, served.trie,
                                               16, 8)
                np.testing.assert_array_equal(items, want[0].numpy())
                np.testing.assert_allclose(scores, want[1].numpy(), atol=1e-4, rtol=0)
    finally:
        remove_version(repo, name, version)
        server.load(name)
    assert list_versions(repo, name) == [1] and server.model_ready(name, 1)


def test_server_binds_loopback_only_and_stub_uses_the_venv_libpython(served):
    server = served.server
    addrs = server.listening_addresses()
    assert {port for _, port in addrs} >= {server.http_port, server.grpc_port}
    assert all(ip == "127.0.0.1" for ip, _ in addrs), addrs
    libdir = Path(sysconfig.get_config_var("LIBDIR")).resolve()
    stubs = server.stub_pids()
    assert len(stubs) >= 3  # one per loaded model
    for pid in stubs:
        maps = Path(f"/proc/{pid}/maps").read_text()
        libs = {line.split()[-1] for line in maps.splitlines() if "libpython" in line}
        assert libs and all(Path(p).resolve().parent == libdir for p in libs), libs


def test_install_is_idempotent_and_fails_clearly_without_pypi(triton_home, tmp_path, monkeypatch):
    from triton_repo import TritonInstallError, ensure_tritonserver

    assert ensure_tritonserver() == triton_home  # already installed: no download, same home
    assert (triton_home / "backends" / "python" / "triton_python_backend_stub").is_file()
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(TritonInstallError, match=r"could not download nvidia-pytriton==0\.7\.0"):
        ensure_tritonserver(tmp_path / "triton")
