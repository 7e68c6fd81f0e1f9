"""Staged rollout against a REAL tritonserver (triton_repo/deploy.py): every failure point rolls back to what
served before, the client stays consistent with the serving version, the canary reports and can block, one
deployment at a time, old versions are pruned.

Starting a server costs ~0.1 s, loading a model several seconds (the python stub imports torch): the tests whose
deployment fails share one server that serves version 1 (each asserts that version 1 serves again afterwards), and
most tests deploy only oxygenrec_generate, the model clients call (the first test deploys all three)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from models.export import MODELS, list_versions, serving_version_of
from models.export.version_client import VersionMismatchError
from triton_repo import ModelControl, TritonRecommender, TritonServer
from triton_repo.deploy import CANDIDATE_SUFFIX, DeployError, DeployLockedError, RolloutPolicy, deploy, deploy_lock
from triton_repo.recommend import Recommender
from triton_repo.request_log import RequestLog

from .conftest import in_process, stage

GEN = "oxygenrec_generate"
SCENARIO = "cart"


@pytest.fixture
def server(tmp_path, triton_home, one_thread):
    repo = tmp_path / "repo"
    repo.mkdir()
    srv = TritonServer(repo, home=triton_home, log_path=tmp_path / "triton.log").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def serving_v1(tmp_path_factory, triton_home, world):
    """A server on which version 1 of oxygenrec_generate was deployed; (server, staged v1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("serving_v1")
    (tmp / "repo").mkdir()
    srv = TritonServer(tmp / "repo", home=triton_home, log_path=tmp / "triton.log").start()
    try:
        v1 = stage(world, tmp / "s1", seed=1)
        run(srv, world, v1)
        yield srv, v1
    finally:
        srv.stop()
        torch.set_num_threads(threads)


def smoke(world, staged, n: int = 4):
    rows = world.online_rows(world.active_users(SCENARIO, n), SCENARIO)
    arrays = staged.client.inputs(rows)
    return rows, arrays, in_process(staged, arrays)


def run(server, world, staged, expected=None, models=(GEN,), **kwargs):
    _, arrays, exp = smoke(world, staged)
    return deploy(ModelControl(server.http_url), server.http_url, server.repo, staged.root, arrays,
                  exp if expected is None else expected, 20, 10, models=models, **kwargs)


def ids_of(world, staged, rows) -> list[list[str]]:
    """The staged model's in-process top-10 item ids for online feature rows (encoded with its own metadata)."""
    items = in_process(staged, staged.client.inputs(rows))
    return [[str(world.sid_table.item_ids[i]) for i in row] for row in items]


def wait_unloaded(server, model: str, version: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while server.model_ready(model, version):
        assert time.monotonic() < deadline, f"{model} version {version} still ready after {timeout} s"
        time.sleep(0.1)


def assert_only(server, repo, versions: list[int], model: str = GEN) -> None:
    """On disk and in the server: exactly ``versions`` of ``model`` on disk, the last one pinned and ready, no
    candidate left."""
    assert list_versions(repo, model) == versions
    assert serving_version_of((repo / model / "config.pbtxt").read_text()) == versions[-1]
    assert server.model_ready(model, versions[-1])
    assert not (repo / (model + CANDIDATE_SUFFIX)).exists()
    assert not server.model_ready(model + CANDIDATE_SUFFIX)


def test_rollout_promotes_with_a_canary_prunes_and_the_client_follows(server, world, tmp_path):
    repo = server.repo
    v1, v2, v3 = (stage(world, tmp_path / f"s{i}", seed=i) for i in (1, 2, 3))
    first = run(server, world, v1, models=MODELS)
    assert first.versions == {m: 1 for m in MODELS} and first.previous == {m: None for m in MODELS}
    assert first.canary is None  # nothing served before: nothing to compare with
    for m in MODELS:
        assert_only(server, repo, [1], m)

    log = RequestLog(tmp_path / "requests.jsonl")
    users = world.active_users(SCENARIO, 6)
    rec = Recommender(world.store, repo, server.http_url, request_log=log, version_ttl_s=600)
    rows = world.online_rows(users, SCENARIO)
    for user, expected in zip(users, ids_of(world, v1, rows)):
        assert rec.recommend(user, SCENARIO, k=10, beam_width=20)["item_id"].tolist() == expected
    assert rec.last_version == 1 and [r["user_id"] for r in log.recent(100)] == users

    replay = pd.DataFrame(log.recent(100))[["user_id", "scenario"]]
    canary_rows = pd.concat([rows.assign(source="smoke"), world.online_rows(replay["user_id"], SCENARIO)
                             .assign(source="replay")], ignore_index=True)
    second = run(server, world, v2, models=MODELS, canary_frame=canary_rows, policy=RolloutPolicy(keep_versions=2))
    canary = second.canary
    assert canary["serving_version"] == 1 and canary["candidate_version"] == 2 and canary["requests"] == 12
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids_of(world, v1, canary_rows),
                                                                  ids_of(world, v2, canary_rows))])
    assert canary["overlap@10"] == pytest.approx(overlap, abs=1e-4)  # both versions answered like in process
    assert set(canary["overlap_by_source"]) == {"smoke", "replay"} and not canary["blocked"]
    assert canary["latency_serving"]["n"] == canary["latency_candidate"]["n"] == 12
    assert 0 < canary["latency_candidate"]["p50_ms"] <= canary["latency_candidate"]["p99_ms"]
    for m in MODELS:
        assert_only(server, repo, [1, 2], m)

    # the client cached version 1 for 10 minutes: its next request finds 1 unloaded, asks again and follows
    wait_unloaded(server, GEN, 1)
    assert rec.recommend(users[0], SCENARIO)["item_id"].tolist() == ids_of(world, v2, rows.iloc[:1])[0]
    assert rec.last_version == 2

    third = run(server, world, v3, policy=RolloutPolicy(keep_versions=2))
    assert third.pruned == {GEN: [1]} and third.previous == {GEN: 2}
    assert_only(server, repo, [2, 3])
    assert rec.recommend(users[1], SCENARIO)["item_id"].tolist() == ids_of(world, v3, rows.iloc[1:2])[0]
    rec.close()


def test_a_failed_first_deploy_leaves_no_model_loaded(server, world, tmp_path):
    v1 = stage(world, tmp_path / "s1", seed=1)
    _, _, expected = smoke(world, v1)
    with pytest.raises(DeployError) as err:  # smoke test fails: the served answers are not the expected ones
        run(server, world, v1, expected=expected[:, ::-1])
    assert err.value.step == "smoke" and err.value.rolled_back and "rolled back: serving nothing" in str(err.value)
    # fails after the promotion: the published copy is corrupted between the smoke test and the promotion
    def corrupt(step):
        if step == "promote":
            f = server.repo / (GEN + CANDIDATE_SUFFIX) / "1" / "encoder.onnx"
            f.write_bytes(f.read_bytes()[:300] + b"garbage")

    with pytest.raises(DeployError) as err:
        run(server, world, v1, on_step=corrupt)
    assert err.value.step == "promote" and err.value.rolled_back, str(err.value)
    assert "encoder.onnx does not match manifest.json" in str(err.value)
    assert not server.model_ready(GEN) and not server.model_ready(GEN + CANDIDATE_SUFFIX)
    assert not (server.repo / GEN).exists() and not (server.repo / (GEN + CANDIDATE_SUFFIX)).exists()
    run(server, world, v1)  # the repository is clean: the same version deploys as version 1
    assert_only(server, server.repo, [1])


def test_a_candidate_that_fails_to_load_never_touches_the_serving_version(serving_v1, world, tmp_path):
    (server, v1), v2 = serving_v1, stage(world, tmp_path / "s2", seed=2)
    onnx = v2.root / GEN / "1" / "decoder_step.onnx"
    onnx.write_bytes(onnx.read_bytes()[:500] + b"\0" * 64)
    with pytest.raises(DeployError) as err:
        run(server, world, v2)
    assert err.value.step == "load" and err.value.rolled_back and err.value.serving == {GEN: 1}
    assert "decoder_step.onnx" in str(err.value) and "rolled back: serving {'oxygenrec_generate': 1}" in str(err.value)
    assert_only(server, server.repo, [1])
    rows = world.online_rows(world.active_users(SCENARIO, 2), SCENARIO)
    with Recommender(world.store, server.repo, server.http_url) as rec:
        assert rec.recommend_frame(rows)[1] == ids_of(world, v1, rows)


def test_after_a_failed_smoke_test_the_client_stays_consistent_with_the_serving_version(serving_v1, world, tmp_path):
    """v2 comes with a re-fitted SID table (every item gets other codes) and other weights, and fails its smoke
    test. The latest export is now v2's, but the client encodes with v1's metadata because Triton serves v1."""
    from models.semantic_ids import SemanticIdTable

    server, v1 = serving_v1
    perm = np.random.default_rng(7).permutation(len(world.sid_table))
    table = world.sid_table
    refit = world.with_sid_table(SemanticIdTable(table.item_ids, table.codes[perm], "refit-2", table.level_sizes))
    v2 = stage(refit, tmp_path / "s2", seed=2)
    assert v2.client.sid_sha256 != v1.client.sid_sha256
    _, _, expected = smoke(refit, v2)
    with pytest.raises(DeployError) as err:
        run(server, refit, v2, expected=expected[:, ::-1])
    assert err.value.step == "smoke" and err.value.rolled_back
    assert_only(server, server.repo, [1])

    users = world.active_users(SCENARIO, 5)
    rows = world.online_rows(users, SCENARIO)
    with Recommender(world.store, server.repo, server.http_url) as rec:
        version, served, _ = rec.recommend_frame(rows)
    assert version == 1 and served == ids_of(world, v1, rows)
    # what the old client did (encode with the latest export) is a silent mix: v2's inputs, v1's model
    with TritonRecommender(server.http_url, version="1") as raw:
        raw.recommend(v2.client.inputs(rows), beam_width=20, top_k=10)
        mixed = [[i for i in row] for row in raw.last_item_ids]
    assert mixed != served
    # and a client pinned to a version Triton does not serve gets an error, not an answer
    with TritonRecommender(server.http_url, version="2") as raw, pytest.raises(Exception, match="version"):
        raw.recommend(v2.client.inputs(rows), beam_width=20, top_k=10)
    # a client reading another repository than the server's: the version Triton names is not there
    with Recommender(world.store, tmp_path / "s2", server.http_url) as rec, \
            pytest.raises(VersionMismatchError, match="reads another model repository"):
        rec.recommend_frame(rows)


def test_the_canary_can_block_a_promotion(serving_v1, world, tmp_path):
    (server, _), v2 = serving_v1, stage(world, tmp_path / "s2", seed=2)
    rows = world.online_rows(world.active_users(SCENARIO, 5), SCENARIO).assign(source="replay")
    with pytest.raises(DeployError, match=r"canary overlap@10 0\.\d+ < canary_min_overlap 0\.95") as err:
        run(server, world, v2, canary_frame=rows, policy=RolloutPolicy(canary_min_overlap=0.95))
    assert err.value.step == "canary" and err.value.rolled_back
    assert_only(server, server.repo, [1])


def test_a_promotion_that_fails_to_load_rolls_back_to_the_previous_version(serving_v1, world, tmp_path):
    (server, v1), v2 = serving_v1, stage(world, tmp_path / "s2", seed=2)
    before = (server.repo / GEN / "config.pbtxt").read_text()

    def corrupt(step):  # after the candidate passed: the copy that gets promoted is damaged
        if step == "promote":
            f = server.repo / (GEN + CANDIDATE_SUFFIX) / "2" / "encoder.onnx"
            f.write_bytes(f.read_bytes()[:300] + b"garbage")

    with pytest.raises(DeployError) as err:
        run(server, world, v2, on_step=corrupt)
    assert err.value.step == "promote" and err.value.rolled_back, str(err.value)
    assert err.value.serving == {GEN: 1} and "encoder.onnx does not match manifest.json" in str(err.value)
    assert_only(server, server.repo, [1])
    assert not server.model_ready(GEN, 2)
    assert (server.repo / GEN / "config.pbtxt").read_text() == before
    rows = world.online_rows(world.active_users(SCENARIO, 2), SCENARIO)
    with Recommender(world.store, server.repo, server.http_url) as rec:
        assert rec.recommend_frame(rows)[:2] == (1, ids_of(world, v1, rows))


def test_a_server_that_dies_mid_deploy_leaves_the_repository_serving_the_previous_version(server, world, tmp_path,
                                                                                           triton_home):
    v1, v2 = stage(world, tmp_path / "s1", seed=1), stage(world, tmp_path / "s2", seed=2)
    run(server, world, v1)
    rows = world.online_rows(world.active_users(SCENARIO, 3), SCENARIO)
    srv = server
    for kill_at in ("verify", "smoke"):  # after the promotion (disk changed), before it (disk untouched)
        def kill(step, srv=srv):
            if step == kill_at:
                os.killpg(srv.pid, signal.SIGKILL)
                srv.proc.wait(10)

        with pytest.raises(DeployError) as err:
            run(srv, world, v2, on_step=kill)
        msg = str(err.value)
        assert err.value.step == kill_at and not err.value.rolled_back
        assert "ROLLBACK INCOMPLETE" in msg and "on disk the repository is restored to {'oxygenrec_generate': 1}" in msg
        assert list_versions(srv.repo, GEN) == [1] and not (srv.repo / (GEN + CANDIDATE_SUFFIX)).exists()
        assert serving_version_of((srv.repo / GEN / "config.pbtxt").read_text()) == 1
        srv.stop()
        # a restarted server serves version 1, and the client agrees
        srv = TritonServer(srv.repo, home=triton_home, log_path=tmp_path / f"triton-{kill_at}.log").start()
        try:
            srv.load(GEN)
            with Recommender(world.store, srv.repo, srv.http_url) as rec:
                assert rec.recommend_frame(rows)[:2] == (1, ids_of(world, v1, rows))
        except BaseException:
            srv.stop()
            raise
    srv.stop()


def test_one_deployment_at_a_time(server, world, tmp_path):
    v1, v2 = stage(world, tmp_path / "s1", seed=1), stage(world, tmp_path / "s2", seed=2)
    with deploy_lock(server.repo):  # held by someone else (another open file description)
        with pytest.raises(DeployLockedError, match=f"pid {os.getpid()}"):
            run(server, world, v1)
    assert not (server.repo / GEN).exists()

    at_smoke, release = threading.Event(), threading.Event()
    outcome = {}

    def slow(step):
        if step == "smoke":
            at_smoke.set()
            release.wait(120)

    def first():
        try:
            outcome["first"] = run(server, world, v1, on_step=slow)
        except Exception as e:  # noqa: BLE001 - asserted below
            outcome["first"] = e

    t = threading.Thread(target=first)
    t.start()
    try:
        assert at_smoke.wait(120)
        with pytest.raises(DeployLockedError, match="another deployment holds"):
            run(server, world, v2)
    finally:
        release.set()
        t.join(180)
    assert not isinstance(outcome["first"], Exception), outcome["first"]
    assert_only(server, server.repo, [1])
    with pytest.raises(ValueError, match="keep_versions must be >= 1"):
        RolloutPolicy(keep_versions=0)


# what orchestration/dagster.yaml must configure for the pool of deployed_model (one deployment across runs)
POOL_LIMIT = {"concurrency": {"runs": {"max_concurrent_runs": 2}, "pools": {"default_limit": 1}}}


def test_deployments_take_the_one_slot_of_the_dagster_deploy_pool(tmp_path):
    """Every job that materializes deployed_model (deploy, daily_retraining) runs it in the pool triton_deploy; with
    the instance's pool limit, a second run's deploy step waits for the slot (the lock in deploy() also covers
    in-process deployments such as `make demo`)."""
    from dagster import DagsterInstance

    from assets.serving import DEPLOY_POOL, deployed_model

    assert deployed_model.op.pool == DEPLOY_POOL == "triton_deploy"
    with DagsterInstance.local_temp(str(tmp_path), overrides=POOL_LIMIT) as instance:
        storage = instance.event_log_storage
        assert storage.initialize_concurrency_limit_to_default(DEPLOY_POOL)  # as a run's first pooled step does
        assert storage.get_concurrency_info(DEPLOY_POOL).slot_count == 1
        assert storage.claim_concurrency_slot(DEPLOY_POOL, "run-a", "deployed_model").is_claimed
        assert not storage.claim_concurrency_slot(DEPLOY_POOL, "run-b", "deployed_model").is_claimed
        storage.free_concurrency_slots_for_run("run-a")
        assert storage.claim_concurrency_slot(DEPLOY_POOL, "run-b", "deployed_model").is_claimed
