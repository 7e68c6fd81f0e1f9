"""One config vocabulary: settings sections build the library configs by field name, nothing renamed or dropped."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from assets.rl import rl_run
from assets.semantic_ids import rq_config
from assets.training import configs, sasrec_configs
from models.configs import from_section
from models.embeddings.catalog import FusionConfig
from models.lightning.train import SFTConfig
from models.nn.config import GeneratorConfig
from orchestration.params import ParamsResource
from orchestration.resources import default_resources
from orchestration.settings import DEFAULT_CONFIG, Settings


def test_from_section_takes_the_fields_the_config_declares():
    cfg = from_section(SFTConfig, {"lr": 0.5, "batch_size": 7, "not_a_field": 1, "seed": 3}, seed=9)
    assert (cfg.lr, cfg.batch_size, cfg.seed) == (0.5, 7, 9)  # fixed values win over the section's
    with pytest.raises(ValueError, match="no fields"):
        from_section(SFTConfig, {}, n_heads=2)


def _params(tmp_path, sft: dict, rl: dict) -> ParamsResource:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["sft"].update(sft)
    raw["rl"].update(rl)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return ParamsResource(config_path=str(path))


def test_every_sft_setting_named_like_a_config_field_reaches_the_config(tmp_path):
    changed = {"history_encoder": "causal", "item_buckets": 64, "dropout": 0.3, "train_positions": "all",
               "window_stride": 7, "d_model": 32, "n_heads": 2, "lr": 0.004, "patience": 5, "beam_width": 30}
    params = _params(tmp_path, changed, {})
    generator, sft = configs(params)
    for name, value in changed.items():
        target = generator if name in {f.name for f in dataclasses.fields(GeneratorConfig)} else sft
        assert getattr(target, name) == value, name
    section = params.settings.sft.model_dump()
    for cfg in (generator, sft):  # no shared name is left at the library default
        for f in dataclasses.fields(cfg):
            if f.name in section and f.name not in ("seed", "max_long"):  # max_long None: features.n_long
                assert getattr(cfg, f.name) == section[f.name], f.name
    assert generator.max_long == params.settings.features.n_long and sft.seed == params.settings.seed
    assert configs(_params(tmp_path, {"max_long": 50}, {}))[0].max_long == 50
    assert sasrec_configs(params, 1)["sasrec"].lr == params.settings.sft.sasrec.lr


def test_rl_settings_reach_the_run_and_its_trainer_config(tmp_path):
    params = _params(tmp_path, {}, {"beta": 0.07, "group_clip": 0.2, "group_sampling": "beam", "temperature": 0.8,
                                    "reward": {"learned_weight": 0.25, "verifiable_weight": 1.0}})
    run = rl_run(params.settings.rl, seed=4)
    assert (run.beta, run.group_clip, run.seed, run.mix.learned_weight) == (0.07, 0.2, 4, 0.25)
    assert run.rl_config().beta == 0.07 and run.rl_config().group_clip == 0.2
    assert run.policy_config().group_sampling == "beam" and run.policy_config().temperature == 0.8


def test_embedding_codebook_and_world_settings_reach_their_configs(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["semantic_ids"].update(levels=2, codebook_size=64, assignment="plain", max_iter=7)
    raw["synthetic"].update(n_items=300, n_users=40, life_event_rate=0.5)
    raw["embeddings"].update(fusion="text_only", behaviour_window=3)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = ParamsResource(config_path=str(path))
    rq = rq_config(params)
    assert (rq.levels, rq.codebook_size, rq.assignment, rq.max_iter) == (2, 64, "plain", 7)
    world = default_resources(params.settings)["data_source"]._world_config()
    assert (world.n_items, world.n_users, world.life_event_rate) == (300, 40, 0.5)
    fusion = from_section(FusionConfig, params.settings.embeddings.model_dump())
    assert (fusion.fusion, fusion.behaviour_window) == ("text_only", 3)


def test_params_yaml_holds_the_schema_defaults():
    """One set of defaults: params.yaml is the schema's defaults written out (change both or neither)."""
    written = Settings.model_validate(yaml.safe_load(DEFAULT_CONFIG.read_text())).model_dump(mode="json")
    assert written == Settings().model_dump(mode="json")
