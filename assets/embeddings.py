"""``catalog_embeddings``: one fused vector per item (MiniLM text + behavioural co-occurrence)."""


import dataclasses

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, asset

from models.configs import from_section
from models.embeddings.catalog import FusionConfig, build_catalog_embeddings
from models.eval.split import training_events
from orchestration.params import ParamsResource
from orchestration.resources import TextEmbedderResource

from ._metadata import code_version, md

CODE_VERSION = code_version(__file__)  # changes with this module and the models packages it imports


@asset(group_name="features", kinds={"torch", "numpy"}, code_version=CODE_VERSION)
def catalog_embeddings(
    context: AssetExecutionContext,
    raw_items: pd.DataFrame,
    interaction_log: pd.DataFrame,
    text_embedder: TextEmbedderResource,
    params: ParamsResource,
) -> dict[str, np.ndarray]:
    """Text embeddings of title + category + brand + description, fused with co-occurrence embeddings fitted on
    the training events only (every user's validation and test events are left out: no transductive leak).

    Unchanged item texts are served from a content-hash cache, so only new or edited items are embedded.
    """
    settings = params.settings
    section = settings.embeddings
    config = from_section(FusionConfig, section.model_dump(), seed=settings.seed)
    cache = text_embedder.cache()
    context.log.info(f"embedding {len(raw_items)} items ({len(cache)} vectors cached)")
    result = build_catalog_embeddings(raw_items, training_events(interaction_log), text_embedder.encoder, config,
                                      cache=cache)
    cache.save()
    throughput = result.n_embedded / result.text_seconds if result.n_embedded else float("nan")
    preview = pd.DataFrame(
        {
            "item_id": result.item_ids[:5],
            "title": raw_items["title"].head(5).to_numpy(),
            "fused[:4]": [np.round(v[:4], 3).tolist() for v in result.fused[:5]],
        }
    )
    context.add_output_metadata(
        {
            "items": len(result.item_ids),
            "dimension": int(result.fused.shape[1]),
            "text_dimension": int(result.text.shape[1]),
            "embedded_now": result.n_embedded,
            "served_from_cache": result.n_cached,
            "items_with_behaviour": int(result.has_behaviour.sum()),
            "text_items_per_second": float(round(throughput, 1)) if result.n_embedded else 0.0,
            "seconds": round(result.total_seconds, 2),
            "fusion": MetadataValue.json(dataclasses.asdict(config)),
            "preview": md(preview),
        }
    )
    return {
        "item_ids": result.item_ids.astype(str),
        "fused": result.fused,
        "text": result.text,
        "has_behaviour": result.has_behaviour,
    }
