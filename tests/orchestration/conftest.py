"""Real in-process Dagster runs on a small synthetic world, into a temporary data directory."""

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from models.data.synthetic import WorldConfig, generate_world, write_world
from orchestration.io_managers import LocalArtifactIOManager
from orchestration.params import ParamsResource
from orchestration.settings import DEFAULT_CONFIG
from orchestration.resources import (
    ArtifactStoreResource,
    DataSourceResource,
    FeatureStoreResource,
    TextEmbedderResource,
    TritonResource,
)

SMALL_WORLD = dict(n_items=240, n_users=150, n_days=30, seed=3, start_date="2026-09-01")
# a few seconds of SFT and of RL post-training on the small world
TINY_SFT = {"d_model": 32, "n_heads": 2, "enc_layers": 1, "dec_layers": 1, "max_epochs": 1, "batch_size": 64,
            "limit_train_batches": 4, "limit_val_batches": 2, "beam_width": 10, "warmup_steps": 2, "igr_top_k": 5}
TINY_RL = {"steps": 12, "lr": 1e-4, "prompts_per_step": 16, "group_size": 8, "max_examples": 3000,
           "reward_model": {"epochs": 2}}


def small_params(root: Path, **overrides) -> str:
    """params.yaml with a codebook sized for the small catalog (and any section overrides)."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["semantic_ids"]["codebook_size"] = 16
    raw["semantic_ids"]["max_iter"] = 20
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def make_resources(root: Path, files_dir: Path | None = None, **param_overrides) -> dict:
    """Every resource the Definitions use, pointed at ``root`` (tests must never touch ./data)."""
    source = (
        DataSourceResource(source="files", files_dir=str(files_dir))
        if files_dir
        else DataSourceResource(cache_dir=str(root / "source"), **SMALL_WORLD)
    )
    return {
        "io_manager": LocalArtifactIOManager(root=str(root)),
        "artifacts": ArtifactStoreResource(root=str(root)),
        "feature_store": FeatureStoreResource(data_dir=str(root / "feast")),
        "triton": TritonResource(repository=str(root / "triton_repository")),
        "data_source": source,
        "text_embedder": TextEmbedderResource(cache_dir=str(root / "cache")),
        "params": ParamsResource(config_path=small_params(root.parent / f"{root.name}-params", **param_overrides)),
    }


@pytest.fixture(scope="session")
def small_world_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("world")
    world = generate_world(WorldConfig(**SMALL_WORLD))
    write_world(world, directory)
    return directory


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst
