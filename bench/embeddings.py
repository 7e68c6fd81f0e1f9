"""Catalog embedding throughput (items/s) with the offline MiniLM model, for 5k and 50k synthetic items.

    python -m bench.embeddings [--sizes 5000 50000]
"""

from __future__ import annotations

import argparse
import os
import time

from models.data.synthetic import WorldConfig, generate_world
from models.embeddings.catalog import item_texts
from models.embeddings.text import MiniLMEncoder, embed_texts

from .common import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    encoder = MiniLMEncoder()
    start = time.perf_counter()
    encoder.encode(["warm up"])
    load_seconds = time.perf_counter() - start
    runs = []
    for n in args.sizes:
        items = generate_world(WorldConfig(n_items=n, n_users=50, n_days=7, seed=1)).items
        texts = item_texts(items)
        run = embed_texts(texts, encoder, cache=None, batch_size=args.batch_size)
        runs.append(
            {
                "items": n,
                "unique_texts": run.n_embedded,
                "seconds": round(run.seconds, 2),
                "items_per_second": round(run.n_embedded / run.seconds, 1),
                "mean_text_chars": round(sum(map(len, texts)) / len(texts), 1),
            }
        )
        print(runs[-1])
        # written after every size, so a long 50k run never loses the 5k figure
        write_results("embeddings", {"model": encoder.name, "model_load_seconds": round(load_seconds, 2),
                                     "batch_size": args.batch_size, "load_average": os.getloadavg(), "runs": runs})


if __name__ == "__main__":
    main()
