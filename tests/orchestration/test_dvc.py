"""`dvc repro` over the Dagster stages of dvc.yaml, for real, in a copy of the repository.

A prefix of the pipeline only (ingest_catalog -> ingest_interactions -> catalog_embeddings -> semantic_ids,
``dvc repro semantic_ids``) on a tiny synthetic world: each stage is a `dagster asset materialize` process
(~13 s of imports on 2 cores), so the whole module takes about two minutes. The later stages
(reasoning_instructions, features) have partition ranges fixed to the default world and are not run here.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestration.settings import PROJECT_ROOT

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV") or PROJECT_ROOT / ".venv") / "bin"
PREFIX = ["ingest_catalog", "ingest_interactions", "catalog_embeddings", "semantic_ids"]


def tracked_files() -> list[str]:
    # the working tree as git sees it (tracked + new, not ignored): a clean clone in CI, work in progress locally
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                         capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and not f.startswith(("data/", "bench/results/"))]


class Repo:
    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env

    def run(self, *args: str, timeout: int = 600) -> str:
        out = subprocess.run(list(args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        return out.stdout

    def dvc(self, *args: str) -> str:
        return self.run(str(VENV_BIN / "dvc"), *args)

    def git(self, *args: str) -> str:
        return self.run("git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", *args)

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, raw: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    def mtimes(self, directory: str) -> dict[str, int]:
        return {str(p.relative_to(self.root)): p.stat().st_mtime_ns for p in (self.root / directory).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    root = tmp_path_factory.mktemp("dvc-repo")
    for name in tracked_files():
        source = PROJECT_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OXYREC_", "DAGSTER_", "PYTEST_"))}
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}", DAGSTER_HOME=str(root / ".dagster_home"), HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", DVC_NO_ANALYTICS="1", GIT_CONFIG_NOSYSTEM="1",
    )
    (root / ".dagster_home").mkdir()
    (root / ".dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    repo = Repo(root, env)
    raw = repo.params()  # the tiny world: same file for DVC's params and for every Dagster stage
    raw["synthetic"].update(n_items=240, n_users=150, n_days=30)
    raw["semantic_ids"].update(codebook_size=16, max_iter=20)
    repo.set_params(raw)
    repo.git("init", "-q")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "copy of the project with a tiny params.yaml")
    return repo


@pytest.fixture(scope="module")
def first_repro(repo) -> str:
    return repo.dvc("repro", "semantic_ids")


def test_repro_runs_the_stages_and_writes_the_lock(repo, first_repro):
    for stage in PREFIX:
        assert f"Running stage '{stage}'" in first_repro
    lock = yaml.safe_load((repo.root / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(PREFIX)
    assert lock["stages"]["semantic_ids"]["params"]["params.yaml"]["semantic_ids"]["codebook_size"] == 16
    assert lock["stages"]["ingest_catalog"]["params"]["params.yaml"]["synthetic"]["n_items"] == 240
    outs = {o["path"] for stage in lock["stages"].values() for o in stage["outs"]}
    assert {"data/raw_items", "data/interaction_log", "data/catalog_embeddings", "data/item_semantic_ids",
            "data/sid_trie"} <= outs
    assert (repo.root / "data" / "item_semantic_ids" / "_.parquet").exists()
    assert json.loads(repo.dvc("status", "--json", "--with-deps", "semantic_ids")) == {}
    metrics = json.loads(repo.dvc("metrics", "show", "--json"))
    values = metrics[""]["data"]["data/semantic_id_codebook/_.json"]["data"]
    assert values  # the codebook's metrics are readable by DVC


def test_a_param_change_reruns_only_the_downstream_stage(repo, first_repro):
    repo.git("add", "dvc.lock")
    repo.git("commit", "-q", "-m", "lock")
    before = {d: repo.mtimes(d) for d in ["data/raw_items", "data/interaction_log", "data/catalog_embeddings"]}

    raw = repo.params()
    raw["semantic_ids"]["codebook_size"] = 12
    repo.set_params(raw)
    diff = json.loads(repo.dvc("params", "diff", "--json"))
    assert diff == {"params.yaml": {"semantic_ids.codebook_size": {"old": 16, "new": 12, "diff": -4}}}
    assert set(json.loads(repo.dvc("status", "--json", "--with-deps", "semantic_ids"))) == {"semantic_ids"}

    output = repo.dvc("repro", "semantic_ids")
    assert "Running stage 'semantic_ids'" in output
    for stage in PREFIX[:-1]:
        assert f"Running stage '{stage}'" not in output and f"Stage '{stage}' didn't change, skipping" in output
    assert {d: repo.mtimes(d) for d in before} == before
    lock = yaml.safe_load((repo.root / "dvc.lock").read_text())
    assert lock["stages"]["semantic_ids"]["params"]["params.yaml"]["semantic_ids"]["codebook_size"] == 12
    assert json.loads(repo.dvc("status", "--json", "--with-deps", "semantic_ids")) == {}
    metrics_diff = json.loads(repo.dvc("metrics", "diff", "--json"))
    assert "data/semantic_id_codebook/_.json" in metrics_diff


def test_stage_partition_ranges_match_the_default_params():
    """The two stages not run above have fixed partition ranges: they must be the default world's partitions."""
    import datetime as dt
    import re

    from orchestration.partitions import instruction_day_bounds, resolve_scenarios
    from orchestration.settings import DEFAULT_CONFIG, load_settings

    settings = load_settings(DEFAULT_CONFIG)
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    ranges = {name: re.findall(r"--partition-range (\S+)\.\.\.(\S+)", stage["cmd"]) for name, stage in stages.items()}
    scenarios = resolve_scenarios(settings)
    assert ranges["ingest_interactions"] == [(scenarios[0], scenarios[-1])]
    start, end = instruction_day_bounds(settings)
    assert ranges["reasoning_instructions"] == [(start.isoformat(), (end - dt.timedelta(days=1)).isoformat())]
    for name, stage in stages.items():  # every stage materializes in process and names its asset code
        assert "-c orchestration/in_process.yaml" in stage["cmd"], name
        assert any(str(dep).startswith("assets/") for dep in stage["deps"]), name
