"""Real in-process Dagster runs on a small synthetic world, into a temporary data directory."""

from pathlib import Path

import pytest
from dagster import DagsterInstance

from models.data.synthetic import WorldConfig, generate_world, write_world
from orchestration.io_managers import LocalArtifactIOManager
from orchestration.params import ParamsResource
from orchestration.resources import DataSourceResource, TextEmbedderResource

SMALL_WORLD = dict(n_items=240, n_users=150, n_days=30, seed=3)


def make_resources(root: Path, files_dir: Path | None = None) -> dict:
    source = (
        DataSourceResource(source="files", files_dir=str(files_dir))
        if files_dir
        else DataSourceResource(cache_dir=str(root / "source"), **SMALL_WORLD)
    )
    return {
        "io_manager": LocalArtifactIOManager(root=str(root)),
        "data_source": source,
        "text_embedder": TextEmbedderResource(cache_dir=str(root / "cache")),
        "params": ParamsResource(),
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
