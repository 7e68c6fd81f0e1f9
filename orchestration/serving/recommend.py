"""The serving path a client runs: Feast online features -> example encoder -> Triton ``oxygenrec_generate``.

Features are read in the client (not inside a Triton model) so the model repository stays stateless and loads
unchanged on any Triton, and the feature store's credentials stay out of the inference servers (see
triton_repo/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from models.export import serving_arrays
from models.lightning.generator_data import ExampleEncoder
from models.nn.config import GeneratorConfig
from models.semantic_ids import SemanticIdTable


class Recommender:
    def __init__(self, feature_store, encoder: ExampleEncoder, config: GeneratorConfig, url: str,
                 protocol: str = "http", items: pd.DataFrame | None = None):
        self.feature_store, self.encoder, self.config = feature_store, encoder, config
        self.url, self.protocol = url, protocol
        self.titles = dict(zip(items["item_id"], items["title"])) if items is not None else {}

    @classmethod
    def from_data_dir(cls, root: str | Path, url: str, protocol: str = "http", online: str = "sqlite",
                      redis_url: str | None = None) -> "Recommender":
        """Everything the last pipeline run published under the data directory ``root``."""
        from feature_repo.store import OxyFeatureStore

        root = Path(root)
        manifest_path = root / "triton_model_repository" / "_.json"  # what was exported for serving
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path} not found: materialize triton_model_repository (job deploy) first")
        manifest = json.loads(manifest_path.read_text())
        sid_table = SemanticIdTable.from_frame(pd.read_parquet(root / "item_semantic_ids" / "_.parquet"))
        encoder = ExampleEncoder.load(manifest["encoder"], sid_table)
        items = pd.read_parquet(root / "raw_items" / "_.parquet", columns=["item_id", "title"])
        store = OxyFeatureStore(root / "feast", online=online, redis_url=redis_url)
        return cls(store, encoder, GeneratorConfig.from_dict(manifest["generator_config"]), url, protocol, items)

    def features(self, user_id: str, scenario: str) -> pd.DataFrame:
        if scenario not in self.encoder.scenarios:
            raise ValueError(f"unknown scenario {scenario!r}; served scenarios: {list(self.encoder.scenarios)}")
        online = self.feature_store.online_features(user_id, scenario)  # unknown user -> documented defaults
        return pd.DataFrame([online])

    def recommend(self, user_id: str, scenario: str, k: int = 10, beam_width: int = 20) -> pd.DataFrame:
        from .client import TritonRecommender

        frame = self.features(user_id, scenario)
        arrays = serving_arrays(self.encoder.encode(frame, targets=False), self.config)
        with TritonRecommender(self.url, protocol=self.protocol) as client:
            _, scores = client.recommend(arrays, beam_width=max(beam_width, k), top_k=k)
            ids = client.last_item_ids[0]
        self.last_features = frame.iloc[0].to_dict()
        return pd.DataFrame(
            {"rank": range(1, len(ids) + 1), "item_id": ids, "score": scores[0][: len(ids)],
             "title": [self.titles.get(i, "") for i in ids]}
        )
