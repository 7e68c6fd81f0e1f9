"""Nothing is fitted on held-out events, proven through real Dagster runs.

Two datasets differ only in every user's validation and test targets (the last two interactions: same user,
time and scenario, another item). Everything fitted before evaluation must come out identical: the behaviour
half of the catalog embeddings (so the codebook and the semantic IDs), the item popularity features, the
training split of the examples and the reward model. The held-out events themselves do reach the behaviour
tables (a test example's history legitimately holds the validation item): the comparison is of what is *fitted*.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from dagster import AssetKey, DagsterInstance

from models.eval.split import leave_last_out
from models.rl.reward_model import load_reward_model
from orchestration.definitions import build_definitions
from orchestration.io_managers import read_value
from orchestration.jobs import PARTITION_RANGE_END, PARTITION_RANGE_START, all_scenarios_tags
from orchestration.partitions import instruction_day_partitions

from .conftest import TINY_RL, make_resources


def with_other_held_out_targets(world_dir: Path, out: Path) -> Path:
    """A copy of the world whose validation and test interactions point at other items."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("items", "users"):
        pd.read_parquet(world_dir / f"{name}.parquet").to_parquet(out / f"{name}.parquet", index=False)
    log = pd.read_parquet(world_dir / "interactions.parquet")
    split = leave_last_out(log)
    held_out = split.valid.index.append(split.test.index)
    items = np.sort(pd.read_parquet(world_dir / "items.parquet")["item_id"].astype(str).unique())
    position = np.searchsorted(items, log.loc[held_out, "item_id"].astype(str).to_numpy())
    changed = log.copy()
    changed.loc[held_out, "item_id"] = items[(position + len(items) // 2) % len(items)]
    assert (changed.loc[held_out, "item_id"] != log.loc[held_out, "item_id"]).all()
    changed.to_parquet(out / "interactions.parquet", index=False)
    return out


def run_pipeline(root: Path, files_dir: Path, world_dir: Path) -> Path:
    defs = build_definitions(resources=make_resources(root, files_dir, rl=TINY_RL))
    stamps = pd.to_datetime(pd.read_parquet(world_dir / "interactions.parquet")["timestamp"], unit="s")
    days = [d for d in instruction_day_partitions.get_partition_keys()
            if stamps.min().strftime("%Y-%m-%d") <= d <= (stamps.max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")]
    with DagsterInstance.ephemeral() as instance:
        for job, tags in (("ingest", all_scenarios_tags()),
                          ("daily_instructions", {PARTITION_RANGE_START: days[0], PARTITION_RANGE_END: days[-1]}),
                          ("refresh_features", all_scenarios_tags())):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags).success, job
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[AssetKey("reward_model")]).success
    return root


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, small_world_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("leak")
    changed = with_other_held_out_targets(small_world_dir, base / "changed_world")
    roots = (run_pipeline(base / "a" / "data", small_world_dir, small_world_dir),
             run_pipeline(base / "b" / "data", changed, small_world_dir))
    torch.set_num_threads(threads)
    return roots


def npz(root: Path, asset: str) -> dict:
    with np.load(root / asset / "_.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_the_two_datasets_differ_in_held_out_targets_only(two_runs):
    a, b = (pd.read_parquet(r / "interaction_log" / "_.parquet") for r in two_runs)
    assert len(a) == len(b)
    differs = a["item_id"].to_numpy() != b["item_id"].to_numpy()
    split = leave_last_out(a)
    assert differs.sum() == len(split.valid) + len(split.test) > 0


def test_embeddings_and_semantic_ids_are_identical(two_runs):
    a, b = (npz(r, "catalog_embeddings") for r in two_runs)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ids_a, ids_b = (pd.read_parquet(r / "item_semantic_ids" / "_.parquet") for r in two_runs)
    pd.testing.assert_frame_equal(ids_a, ids_b)


def test_popularity_features_are_identical(two_runs):
    a, b = (pq.read_table(r / "feast" / "sources" / "item_features.parquet") for r in two_runs)
    assert pc.sum(a["popularity_count"]).as_py() > 0
    assert a.equals(b)


def test_training_split_and_reward_model_are_identical(two_runs):
    tables = [pq.read_table(r / "training_examples" / "_.parquet") for r in two_runs]
    train_a, train_b = (t.filter(pc.equal(t["split"], "train")) for t in tables)
    assert train_a.num_rows > 0 and train_a.equals(train_b)
    held_a, held_b = (t.filter(pc.not_equal(t["split"], "train"))["item_id"].to_numpy(zero_copy_only=False)
                      for t in tables)
    assert (held_a != held_b).all()  # the targets did change

    models = [load_reward_model(read_value(r / "reward_model" / "_", r)["checkpoint"])
              for r in two_runs]
    state_a, state_b = (m.state_dict() for m in models)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=key)
