"""A serving stack without training: synthetic world -> real Feast store (SQLite online) -> example encoder ->
random-weight generator -> a staged, self-contained Triton model repository version.

What the serving load tests (bench/serving_load.py) and the serving tests (tests/triton) need to exercise the whole
request path (Feast online read, the version's encoder, Triton) in seconds, without the training pipeline. The
semantic IDs are random codes (bench/decoding.random_codes), the generator has random weights scaled to O(1)
logits (near-tied scores would make "same answer" comparisons fragile); everything is deterministic in ``seed``.

    world = build_serving_world(tmp / "data", ServingWorldConfig(n_users=60, n_items=400))
    staged = world.export(tmp / "staged", seed=0)                 # staged/<model>/1/..., with client.json
    rows = world.online_rows(["u00001"], "cart")                  # online feature rows of one request
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.decoding import random_codes  # noqa: E402
from models.data.synthetic import WorldConfig, generate_world  # noqa: E402
from models.export import ServingConfig, write_model_repository  # noqa: E402
from models.features import (  # noqa: E402
    item_features_table,
    long_term_table,
    reasoning_instruction_table,
    scenario_instruction_table,
    short_term_table,
    user_profile_table,
)
from models.nn import GeneratorConfig, OxygenGenerator  # noqa: E402
from models.semantic_ids import SemanticIdTable  # noqa: E402
from models.semantic_ids.trie import SIDTrie  # noqa: E402

__all__ = ["ServingWorld", "ServingWorldConfig", "build_serving_world", "random_weights"]


@dataclass(frozen=True)
class ServingWorldConfig:
    n_users: int = 60
    n_items: int = 400
    n_days: int = 14
    codebook_size: int = 16  # K per level (3 levels + disambiguation)
    n_short: int = 20
    n_long: int = 100
    seed: int = 3
    generator: dict = field(default_factory=lambda: dict(d_model=32, n_heads=4, enc_layers=1, dec_layers=1,
                                                         igr_top_k=4, igr_dim=16, igr_hidden=32))


def random_weights(cfg: GeneratorConfig, seed: int, scale: float = 1.5) -> OxygenGenerator:
    """A generator with N(0, scale^2 / fan_in) matrices: O(1) logits, so beam answers are not near-ties."""
    model = OxygenGenerator(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * scale / p.shape[-1] ** 0.5)
    return model.eval()


@dataclass
class ServingWorld:
    root: Path
    config: ServingWorldConfig
    items: pd.DataFrame
    users: pd.DataFrame
    log: pd.DataFrame
    sid_table: SemanticIdTable
    store: object  # feature_repo.store.OxyFeatureStore
    encoder: object  # models.lightning.generator_data.ExampleEncoder

    @property
    def scenarios(self) -> list[str]:
        return list(self.encoder.scenarios)

    def generator_config(self) -> GeneratorConfig:
        base = GeneratorConfig(**{**self.config.generator, "seed": self.config.seed})
        return self.encoder.generator_config(base)

    def with_sid_table(self, table: SemanticIdTable) -> "ServingWorld":
        """The same world and encoder vocabularies over another SID table (a re-fitted codebook)."""
        from models.features.example_encoder import ExampleEncoder

        e = self.encoder
        encoder = ExampleEncoder(e.scenarios, e.fields, e.tokens, table, e.config)
        return ServingWorld(self.root, self.config, self.items, self.users, self.log, table, self.store, encoder)

    def export(self, out_dir: str | Path, seed: int, serving: ServingConfig = ServingConfig(max_batch_size=8)):
        """Stage version 1 of a random-weight generator (seed ``seed``) with this world's encoder and SID table.
        Returns (staged root, model, trie)."""
        model = random_weights(self.generator_config(), seed)
        trie = SIDTrie.from_codes(self.sid_table.codes, self.sid_table.vocab_sizes)
        write_model_repository(out_dir, 1, model, trie, self.sid_table.item_ids, serving, encoder=self.encoder)
        return Path(out_dir), model, trie

    def online_rows(self, user_ids, scenario: str) -> pd.DataFrame:
        from triton_repo.recommend import online_rows

        return online_rows(self.store, pd.DataFrame({"user_id": list(user_ids), "scenario": scenario}))

    def active_users(self, scenario: str, n: int) -> list[str]:
        """The ``n`` users with the most interactions in ``scenario`` (most history: the most informative requests)."""
        counts = self.log.loc[self.log["scenario"] == scenario, "user_id"].value_counts()
        return counts.index[:n].astype(str).tolist()


def _instructions(users: pd.Series, start: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = users.to_numpy(dtype=object)[3:]  # the first users get none (default instruction)
    return pd.DataFrame({"user_id": ids, "instruction_text": [f"{u}: looking for gifts" for u in ids],
                         "instruction_embedding": list(rng.standard_normal((len(ids), 384)).astype(np.float32)),
                         "generator_version": "serving-world", "generated_at": np.full(len(ids), start + 86_400)})


def build_serving_world(root: str | Path, config: ServingWorldConfig = ServingWorldConfig()) -> ServingWorld:
    """Write the world's raw items and its Feast store under ``root`` (the layout of the pipeline's data
    directory: ``raw_items/_.parquet``, ``feast/``), fit the example encoder."""
    from feature_repo.store import OxyFeatureStore
    from models.features.example_encoder import EncoderConfig, ExampleEncoder

    root = Path(root)
    world = generate_world(WorldConfig(n_users=config.n_users, n_items=config.n_items, n_days=config.n_days,
                                       seed=config.seed))
    items, users, log = world.items, world.users, world.interactions
    codes, _ = random_codes(len(items), k=config.codebook_size, seed=config.seed)
    table = SemanticIdTable(items["item_id"].astype(str).to_numpy(dtype=object), codes, "serving-world-1",
                            (config.codebook_size,) * 3)
    sids = pd.DataFrame({"item_id": table.item_ids, **{f"sid_{j}": codes[:, j] for j in range(codes.shape[1])}})
    rng = np.random.default_rng(config.seed)
    scenarios = sorted(log["scenario"].unique().tolist())
    profile = user_profile_table(users, columns=[c for c in users.columns if c not in ("user_id",)][:3])
    tables = {
        "user_profile": profile,
        "user_short_term": short_term_table(log, sids, n_short=config.n_short),
        "user_long_term": long_term_table(log, n_long=config.n_long),
        "item_features": item_features_table(items, sids, log),
        "scenario_instruction": scenario_instruction_table({s: f"{s}: scenario instruction" for s in scenarios},
                                                           rng.standard_normal((len(scenarios), 384))),
        "reasoning_instruction": reasoning_instruction_table(_instructions(users["user_id"],
                                                                           int(log["timestamp"].min()), config.seed)),
    }
    store = OxyFeatureStore(root / "feast")
    store.write_sources(tables)
    store.apply()
    store.materialize()
    (root / "raw_items").mkdir(parents=True, exist_ok=True)
    items.to_parquet(root / "raw_items" / "_.parquet", index=False)
    enc_cfg = EncoderConfig(max_short=config.n_short, max_long=config.n_long, max_profile_fields=3)
    encoder = ExampleEncoder.fit(profile[["profile_fields"]], table, scenarios, enc_cfg)
    return ServingWorld(root, config, items, users, log, table, store, encoder)
