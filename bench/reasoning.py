"""Near-line "slow thinking" full-refresh throughput: build_user_contexts + RuleBasedReasoner.generate (users/s).

Worlds: the demo world (3000 users) and a 100k-user world (``--sizes 3000 100000``); a full refresh is one
context per user as of the end of the window. Embedding time is excluded from users/s and reported separately
with the real MiniLM encoder on ``--embed-sample`` distinct instructions of the smallest world (``--no-embed`` to
skip), with the extrapolated time for all of its distinct instructions.

    python -m bench.reasoning [--sizes 3000 100000] [--no-embed] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from models.data.synthetic import WorldConfig, generate_world
from models.reasoning import RuleBasedReasoner, build_user_contexts, embed_instructions

from .common import peak_rss_mb, write_results


def run_refresh(n_users: int) -> tuple[dict, list[str]]:
    start = time.perf_counter()
    cfg = WorldConfig(n_users=n_users, n_items=5000)
    world = generate_world(cfg)
    world_s = time.perf_counter() - start

    start, cpu = time.perf_counter(), time.process_time()
    contexts = build_user_contexts(world.interactions, world.items, world.users, cfg.end_timestamp)
    context_s = time.perf_counter() - start
    start = time.perf_counter()
    reasoner = RuleBasedReasoner()
    instructions = reasoner.generate_structured(contexts)
    rules_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu  # own CPU time: less sensitive than wall time to other jobs on the machine
    texts = [i.text for i in instructions]
    total = context_s + rules_s
    result = {
        "users": n_users,
        "interactions": len(world.interactions),
        "events_in_window": int(sum(c.n_events for c in contexts)),
        "world_seconds": round(world_s, 2),
        "context_seconds": round(context_s, 2),
        "rules_seconds": round(rules_s, 2),
        "refresh_seconds": round(total, 2),
        "users_per_second": round(n_users / total, 1),
        "refresh_cpu_seconds": round(cpu_s, 2),
        "users_per_cpu_second": round(n_users / cpu_s, 1),
        "context_users_per_second": round(n_users / context_s, 1),
        "rules_users_per_second": round(n_users / rules_s, 1),
        "unique_instructions": len(set(texts)),
        "mean_words": round(float(np.mean([len(t.split()) for t in texts])), 1),
        "share_with_life_event": round(float(np.mean([i.life_event is not None for i in instructions])), 3),
        "share_default": round(float(np.mean([not c.has_history for c in contexts])), 3),
    }
    print(result, flush=True)
    return result, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 100_000])
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the MiniLM encoder")
    parser.add_argument("--embed-sample", type=int, default=400, help="instructions embedded (keeps the run short)")
    args = parser.parse_args()

    runs, embedding = [], None
    for i, n in enumerate(sorted(args.sizes)):
        result, texts = run_refresh(n)
        runs.append(result)
        if i == 0 and not args.no_embed:
            import torch

            from models.embeddings.text import MiniLMEncoder

            torch.set_num_threads(args.threads)
            encoder = MiniLMEncoder()
            start = time.perf_counter()
            encoder.encode(["warm up"])
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            sample = list(dict.fromkeys(texts))[: args.embed_sample]  # distinct texts: each one is really encoded
            vectors = embed_instructions(sample, encoder, cache=None)
            embed_s = time.perf_counter() - start
            embedding = {
                "users": n,
                "unique_texts": len(set(texts)),
                "embedded_texts": len(sample),
                "mean_words": round(float(np.mean([len(t.split()) for t in sample])), 1),
                "dim": int(vectors.shape[1]),
                "torch_threads": args.threads,
                "model_load_seconds": round(load_s, 2),
                "seconds": round(embed_s, 2),
                "instructions_per_second": round(len(sample) / embed_s, 1),
                "full_refresh_seconds_estimate": round(len(set(texts)) / (len(sample) / embed_s), 1),
            }
            print(embedding, flush=True)
    write_results(
        "reasoning",
        {"runs": runs, "embedding": embedding, "peak_rss_mb": round(peak_rss_mb(), 1),
         "load_average_1m_at_end": round(os.getloadavg()[0], 2)},  # the machine is shared: context for the numbers
    )


if __name__ == "__main__":
    main()
