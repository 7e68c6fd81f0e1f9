"""RQ-KMeans quantizer, semantic-ID codebook and SID table (models/semantic_ids)."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from models.semantic_ids import (
    RQKMeansConfig,
    SemanticIdCodebook,
    SemanticIdTable,
    assign_semantic_ids,
    fit_encode,
    fit_rq_kmeans,
    semantic_id_quality,
)

# ----------------------------------------------------------------------------- data


def hierarchical_blobs(seed: int = 0, n_per: int = 30, dim: int = 32):
    """8 well-separated blobs x 8 sub-blobs. Sub-blob offsets are shared by all blobs, so the
    level-1 residuals are exactly the 8 offsets (what residual quantisation can represent)."""
    rng = np.random.default_rng(seed)
    blobs = rng.standard_normal((8, dim)) * 10.0
    subs = rng.standard_normal((8, dim)) * 2.0
    lab_b = np.repeat(np.arange(8), 8 * n_per)
    lab_s = np.tile(np.repeat(np.arange(8), n_per), 8)
    x = blobs[lab_b] + subs[lab_s] + 0.1 * rng.standard_normal((lab_b.size, dim))
    return x.astype(np.float32), lab_b, lab_b * 8 + lab_s


def skewed_blobs(seed: int = 0):
    """30 Gaussian blobs with Zipf-like sizes (the largest holds ~1/3 of the items)."""
    rng = np.random.default_rng(seed)
    sizes = (1500 / np.arange(1, 31) ** 1.2).astype(int) + 3
    centers = rng.standard_normal((30, 16)) * 5.0
    lab = np.repeat(np.arange(30), sizes)
    return (centers[lab] + rng.standard_normal((lab.size, 16))).astype(np.float32), lab


SMALL = RQKMeansConfig(levels=3, codebook_size=8, max_iter=30)


@pytest.fixture(scope="module")
def blobs():
    return hierarchical_blobs()


@pytest.fixture(scope="module")
def fitted(blobs):
    x, _, _ = blobs
    return fit_encode(x, SMALL)


# ----------------------------------------------------------------------------- quantizer


def test_recovers_known_clusters(blobs, fitted):
    x, lab_b, lab_bs = blobs
    cb, codes = fitted
    assert codes.shape == (x.shape[0], 3) and codes.dtype == np.int64
    m_b, _ = semantic_id_quality(codes, lab_b, 8)
    m_bs, _ = semantic_id_quality(codes, lab_bs, 8)
    # Purity is the majority-label share per code, so it is invariant to label permutations.
    assert m_b["l1_purity"] >= 0.95
    assert m_bs["l2_purity"] >= 0.95  # level-2 prefixes recover the 64 sub-blobs
    assert m_b["l1_coverage"] == 1.0 and m_b["l2_coverage"] == 1.0
    # Each level removes error: relative reconstruction error shrinks level by level.
    err = cb.reconstruction_error_per_level(x)
    assert err[0] > err[1] >= err[2]
    assert err[1] < 0.05 * err[0]


def test_encode_matches_fit_and_is_chunk_invariant(blobs, fitted):
    x, _, _ = blobs
    cb, codes = fitted
    np.testing.assert_array_equal(cb.encode(x), codes)
    small = dataclasses.replace(cb, config=dataclasses.replace(SMALL, chunk_size=300))
    np.testing.assert_array_equal(small.encode(x), codes)
    np.testing.assert_array_equal(cb.encode(torch.from_numpy(x).double()), codes)  # tensors / float64 too
    # decode(encode(x)) is the reconstruction whose error is reported per level.
    rec = cb.decode(codes)
    np.testing.assert_allclose(((x - rec) ** 2).sum(1).mean(), cb.reconstruction_error_per_level(x)[-1], rtol=1e-4)


def test_same_seed_is_deterministic(blobs):
    x, _, _ = blobs
    cfg = RQKMeansConfig(levels=2, codebook_size=8, max_iter=10, seed=3)
    a, codes_a = fit_encode(x, cfg)
    b, codes_b = fit_encode(x, cfg)
    np.testing.assert_array_equal(codes_a, codes_b)
    for ca, cb_ in zip(a.centroids, b.centroids):
        np.testing.assert_array_equal(ca, cb_)
    assert a.version == b.version and len(a.version) == 12
    other = fit_rq_kmeans(x, RQKMeansConfig(levels=2, codebook_size=8, max_iter=10, seed=4))
    assert other.codebook_sizes == (8, 8)  # a different seed may give different (permuted) centroids


def test_fit_sample_size_fits_on_subset_and_encodes_all(blobs):
    x, lab_b, _ = blobs
    cb, codes = fit_encode(x, RQKMeansConfig(levels=2, codebook_size=8, fit_sample_size=400))
    assert cb.fit_info["n_fit_rows"] == 400 and cb.n_items_fit == x.shape[0]
    assert codes.shape == (x.shape[0], 2)
    assert semantic_id_quality(codes, lab_b, 8)[0]["l1_purity"] >= 0.95


def test_balanced_assignment_spreads_codes_on_skewed_data():
    x, _ = skewed_blobs(seed=0)
    ginis, ents = {}, {}
    for mode in ("plain", "balanced"):
        cfg = RQKMeansConfig(levels=1, codebook_size=16, assignment=mode, max_iter=15)
        _, codes = fit_encode(x, cfg)
        m, _ = semantic_id_quality(codes, None, 16)
        ginis[mode], ents[mode] = m["l1_gini"], m["l1_entropy"]
    assert ginis["plain"] > 0.35  # plain k-means keeps the hot blob on few codes
    assert ginis["balanced"] < ginis["plain"] - 0.1
    assert ents["balanced"] > ents["plain"]


def test_degenerate_identical_vectors_collapse():
    x = np.ones((200, 8), dtype=np.float32)
    cb, codes = fit_encode(x, RQKMeansConfig(levels=3, codebook_size=16, max_iter=5))
    m, _ = semantic_id_quality(codes, None, 16)
    for l in (1, 2, 3):
        assert m[f"l{l}_coverage"] == pytest.approx(1 / 16)
        assert m[f"l{l}_entropy"] == 0.0
    assert m["collision_max"] == 200 and m["collision_share"] == 1.0
    table = cb.assign([f"i{i}" for i in range(200)], x)
    assert table.disambiguation_size == 200  # still a bijection, via the last code


# ----------------------------------------------------------------------------- bad input


def test_nan_and_inf_rows_are_rejected_with_count_and_first_index():
    x = np.zeros((50, 4), dtype=np.float32)
    x[7, 2] = np.nan
    x[31, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 row\(s\).*first bad row index: 7"):
        fit_rq_kmeans(x, RQKMeansConfig(codebook_size=4))


def test_shape_errors(fitted):
    cb, _ = fitted
    with pytest.raises(ValueError, match="dim 5 but the codebook has dim 32"):
        cb.encode(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        fit_rq_kmeans(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        fit_rq_kmeans(np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="numeric"):
        fit_rq_kmeans(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="assignment"):
        RQKMeansConfig(assignment="greedy")


def test_too_few_items_shrinks_or_raises():
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"shrinking every level to K=5"):
        fit = fit_rq_kmeans(x, RQKMeansConfig(levels=2, codebook_size=64))
    assert fit.codebook_sizes == (5, 5)  # min(n, max(2, n // 4)) = 5
    with pytest.raises(ValueError, match="only 20 fit rows for codebook_size=64"):
        fit_rq_kmeans(x, RQKMeansConfig(codebook_size=64, auto_shrink=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_rq_kmeans(x, RQKMeansConfig(levels=1, codebook_size=20))  # n == K: no shrink


# ----------------------------------------------------------------------------- SID table


def test_every_item_gets_a_unique_tuple_and_lookups_invert(blobs, fitted):
    x, _, _ = blobs
    cb, codes = fitted
    ids = np.array([f"sku-{i:05d}" for i in range(x.shape[0])])[::-1]
    table = cb.assign(ids, x[::-1])
    assert table.codes.shape == (x.shape[0], 4)
    assert not pd.DataFrame(table.codes).duplicated().any()
    np.testing.assert_array_equal(table.lookup_items(table.lookup_codes(ids)), ids)
    # Collisions: members of a group get 0, 1, 2, ... in item_id order.
    df = table.to_frame()
    first = df.groupby(["sid_0", "sid_1", "sid_2"])["sid_3"].agg(["min", "max", "count"])
    assert (first["min"] == 0).all() and (first["max"] == first["count"] - 1).all()
    grp = df[(df.sid_0 == df.sid_0[0]) & (df.sid_1 == df.sid_1[0]) & (df.sid_2 == df.sid_2[0])]
    assert grp.sort_values("item_id")["sid_3"].tolist() == list(range(len(grp)))
    assert table.disambiguation_size == int(first["count"].max())
    assert table.vocab_sizes == (8, 8, 8, table.disambiguation_size)


def test_table_frame_round_trip_and_unknown_lookups(fitted, blobs):
    x, _, _ = blobs
    cb, _ = fitted
    table = cb.assign([f"i{i}" for i in range(x.shape[0])], x)
    back = SemanticIdTable.from_frame(table.to_frame())
    np.testing.assert_array_equal(back.codes, table.codes)
    np.testing.assert_array_equal(back.item_ids, table.item_ids)
    assert back.codebook_version == cb.version and back.level_sizes == (8, 8, 8)
    with pytest.raises(KeyError, match="unknown item id"):
        table.lookup_codes(["i0", "nope"])
    with pytest.raises(KeyError, match="unknown semantic-id tuple"):
        table.lookup_items([[7, 7, 7, 999]])
    with pytest.raises(ValueError, match="4 columns"):
        table.lookup_items([[0, 0, 0]])
    with pytest.raises(ValueError, match="duplicate"):
        assign_semantic_ids(["a", "a"], [[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="item_id"):
        SemanticIdTable.from_frame(pd.DataFrame({"sid_0": [0], "sid_1": [0]}))


def test_extend_keeps_existing_sids_and_assigns_new_unique_tuples(blobs):
    x, _, _ = blobs
    n_old = 1500
    cb, _ = fit_encode(x[:n_old], RQKMeansConfig(levels=2, codebook_size=8, max_iter=20))
    ids = np.array([f"i{i:05d}" for i in range(x.shape[0])])
    table = cb.assign(ids[:n_old], x[:n_old])
    # New batch: 100 existing ids (with moved embeddings: must be ignored), the unseen rest, and
    # two clones of an existing item's embedding that must collide with its group.
    clone_ids = np.array(["z-clone-a", "z-clone-b"])
    new_ids = np.concatenate([ids[:100], ids[n_old:], clone_ids])
    new_x = np.concatenate([x[:100] + 50.0, x[n_old:], x[[0, 0]]])
    ext = cb.extend(table, new_ids, new_x)
    assert len(ext) == x.shape[0] + 2
    np.testing.assert_array_equal(ext.lookup_codes(ids[:n_old]), table.codes)  # unchanged
    assert not pd.DataFrame(ext.codes).duplicated().any()
    np.testing.assert_array_equal(ext.lookup_items(ext.lookup_codes(new_ids)), new_ids)
    np.testing.assert_array_equal(ext.lookup_codes(ids[n_old:])[:, :2], cb.encode(x[n_old:]))
    # Clones share item 0's L codes and take the next free disambiguation indices, in id order.
    g = table.codes[:, :2]
    group_max = table.codes[(g == table.codes[0, :2]).all(1), 2].max()
    clones = ext.lookup_codes(clone_ids)
    assert (clones[:, :2] == table.codes[0, :2]).all()
    assert clones[:, 2].tolist() == [group_max + 1, group_max + 2]
    with pytest.raises(ValueError, match="built with codebook"):
        dataclasses.replace(cb, version="other").extend(table, ["q"], x[:1])


# ----------------------------------------------------------------------------- drift + files


def test_staleness_report_flags_drift(blobs, fitted):
    x, _, _ = blobs
    cb, codes = fitted
    same = cb.staleness_report(x, previous_codes=codes)
    assert same["error_increase"] == pytest.approx(0.0, abs=1e-6)
    assert same["max_usage_kl"] == pytest.approx(0.0, abs=1e-9)
    assert same["l1_changed_share"] == 0.0 and same["refit_recommended"] is False
    rng = np.random.default_rng(1)
    drifted = x + rng.standard_normal(x.shape).astype(np.float32) * 3.0
    rep = cb.staleness_report(drifted, previous_codes=codes)
    assert rep["error_increase"] > 1.0 and rep["refit_recommended"] is True
    json.dumps(rep)  # plain JSON types (goes into Dagster metadata)
    # Only a subset of the blobs present now: the usage KL alone triggers a refit.
    sub = cb.staleness_report(x[: x.shape[0] // 4])
    assert sub["max_usage_kl"] > 0.1 and sub["refit_recommended"] is True


def test_save_load_round_trip(tmp_path, blobs, fitted):
    x, _, _ = blobs
    cb, codes = fitted
    npz, js = cb.save(tmp_path / "cb" / "codebook")
    assert npz.name == "codebook.npz" and js.name == "codebook.json"
    back = SemanticIdCodebook.load(tmp_path / "cb" / "codebook.npz")
    assert back.version == cb.version and back.config == cb.config and back.fitted_at == cb.fitted_at
    np.testing.assert_array_equal(back.encode(x), codes)
    np.testing.assert_array_equal(back.fit_level_mse, cb.fit_level_mse)


def test_corrupt_or_tampered_files_raise_value_error_naming_file(tmp_path, fitted):
    cb, _ = fitted
    npz, js = cb.save(tmp_path / "codebook")
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])  # truncated archive
    with pytest.raises(ValueError, match="codebook.npz"):
        SemanticIdCodebook.load(npz)
    npz.write_bytes(data)
    arrays = dict(np.load(npz, allow_pickle=False))
    arrays["centroids_0"] = arrays["centroids_0"] + 1.0
    np.savez(npz, **arrays)
    with pytest.raises(ValueError, match="does not match version"):
        SemanticIdCodebook.load(npz)
    js.write_text("{not json")
    with pytest.raises(ValueError, match="codebook.json"):
        SemanticIdCodebook.load(npz)
    meta = {"format": "oxyrec.semantic_id_codebook", "format_version": 999}
    js.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version 999"):
        SemanticIdCodebook.load(npz)
