"""`make evaluate`'s code path, end to end, on a dataset shaped like real data (tests/fixtures/real_shaped.py):
no users file, no actions, two scenarios, a two-year span with months-long gaps, ties in one second.

It runs ``python -m orchestration.evaluate`` in a subprocess, as `make evaluate` does: the scenario and
instruction-day partitions are read from the data at import time, so another dataset needs a fresh process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures import real_shaped

from .conftest import TINY_RL, TINY_SFT, small_params

PROJECT = Path(__file__).resolve().parents[2]


def run_evaluate(data_dir: Path, home: Path, config: str, dagster_home: Path, seed: int = 1):
    env = {**os.environ, "OXYREC_DATA_DIR": str(data_dir), "OXYREC_HOME": str(home), "OXYREC_CONFIG": config,
           "OXYREC_SEED": str(seed), "DAGSTER_HOME": str(dagster_home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "orchestration.evaluate"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    base = tmp_path_factory.mktemp("real_shaped")
    data = real_shaped.write(base / "shop")
    config = small_params(base / "params",
                          sft={**TINY_SFT, "sasrec": {"hidden": 16, "max_len": 10, "max_epochs": 3, "patience": 1},
                               "gate_margin": 1.0},  # gate refusals are tested elsewhere
                          rl=TINY_RL)
    production_home = base / "production_dagster_home"
    production_home.mkdir()
    home = base / "evaluation"
    proc = run_evaluate(data, home, config, production_home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return data, home, config, production_home, proc


def test_evaluate_writes_this_runs_metrics(evaluated):
    _, home, _, _, proc = evaluated
    report = json.loads((home / "metrics.json").read_text())
    assert report["seed"] == 1 and len(report["config_hash"]) == 16
    assert report["budget"]["sft"]["max_epochs"] == TINY_SFT["max_epochs"]
    assert "sft_model" in report["stage_seconds"] and report["seconds"] > 0
    n_users = pd.read_csv(home.parent / "shop" / "interactions.csv")["user_id"].nunique()
    for split in ("valid", "test"):
        models = report["metrics"][split]
        assert {"oxygenrec_sft", "popularity", "popularity_per_scenario", "sasrec"} <= set(models)
        assert {m["overall"]["n"] for m in models.values()} == {n_users}  # same examples for every model
        assert set(models["oxygenrec_sft"]) == {"overall", *real_shaped.SCENARIOS}
    assert report["gate"]["evaluated"] and report["gate"]["passed"]
    assert {p["model"] for p in report["paired_test"]} >= {"sasrec", "popularity"}
    assert "test split, all scenarios" in proc.stdout


def test_history_survives_a_400_day_gap_and_ties_keep_file_order(evaluated):
    _, home, _, _, _ = evaluated
    log = pd.read_parquet(home / "interaction_log" / "_.parquet")
    tie = log[log["user_id"] == real_shaped.TIE_USER]["item_id"].tolist()
    assert tie[-2:] == ["e010", "b020"]  # electronics first, as in the file, although "books" sorts first
    examples = pd.read_parquet(home / "training_examples" / "_.parquet")
    back = examples[examples["user_id"] == real_shaped.RETURNING_USER].sort_values("position")
    assert (back["long_len"] == back["position"]).all()  # every earlier event, whatever its age
    assert back["split"].iloc[-1] == "test"


def test_evaluations_have_their_own_dagster_instance(evaluated):
    _, home, _, production_home, _ = evaluated
    assert (home / "dagster_home" / "dagster.yaml").is_file()
    assert any((home / "dagster_home").iterdir())
    assert list(production_home.iterdir()) == []  # the daily pipeline's instance saw nothing


def test_a_failed_run_leaves_no_stale_metrics(evaluated, tmp_path):
    data, home, config, production_home, _ = evaluated
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "items.csv").write_text((data / "items.csv").read_text())
    pd.read_csv(data / "interactions.csv").drop(columns="item_id").to_csv(broken / "interactions.csv", index=False)
    assert (home / "metrics.json").exists()
    proc = run_evaluate(broken, home, config, production_home)
    assert proc.returncode != 0
    assert not (home / "metrics.json").exists()
    assert "item_id" in proc.stdout + proc.stderr  # the error names what is missing
