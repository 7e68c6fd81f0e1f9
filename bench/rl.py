"""RL post-training throughput: steps/s and prompts/s of SA-GCPO over the demo-size generator on CPU.

    python bench/rl.py [--groups 8 16] [--prompts 32] [--steps 8] [--items 5000] [--threads 2] [--algorithm sagcpo]

Setup: the demo generator (d_model 128, 4 heads, 2 encoder + 2 decoder layers, dense FFN, IGR on; random init:
throughput does not depend on the weights) over a random 5,000-item SID catalog (3 levels x 256 codes +
disambiguation, bench/decoding.py) and its trie; prompts are random user contexts with the demo feature sizes
(3 profile fields, 20 short / 100 long history items, a 384-d instruction embedding for 60% of users), 20% of
them synthetic (models/rl/generator_policy.py). The reward is the real glue: a randomly initialised unified
reward model (hidden 64) over 448-d item features plus the per-scenario mapping.

One RL step (models/rl/trainer.py) = trie-constrained sampling of G items for each of ``--prompts`` prompts
(with the on-policy rescoring pass), reward model, group advantages, reference log-probs, one policy update
(forward + backward + AdamW), post-update KL. Reported per G: steps/s, prompts/s (= prompts x steps/s) and
sampled sequences/s (x G), after one warm-up step. The machines have 2 cores shared with other jobs; the JSON
records the load average.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import peak_rss_mb, write_results  # noqa: E402
from bench.decoding import random_codes  # noqa: E402
from models.nn import GeneratorConfig, OxygenGenerator  # noqa: E402
from models.rl import GroupPolicyTrainer, RewardModel, RewardModelConfig, RLConfig  # noqa: E402
from models.rl.generator_policy import (  # noqa: E402
    GeneratorPolicy,
    PromptConfig,
    PromptSet,
    make_reward_fn,
    mapping_for_scenarios,
)
from models.semantic_ids.trie import SIDTrie  # noqa: E402

SCENARIOS = ("homepage", "product_detail", "cart", "feed", "search", "checkout")
ITEM_DIM = 448  # fused catalog embedding size of the demo (384 text + 64 behaviour)


def random_contexts(n: int, codes: np.ndarray, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(codes)
    has = torch.rand(n, generator=g) < 0.6
    return {
        "scenario": torch.randint(0, len(SCENARIOS), (n,), generator=g),
        "profile": torch.randint(1, 60, (n, 3), generator=g),
        "instruction_emb": torch.nn.functional.normalize(torch.randn(n, 384, generator=g), dim=-1) * has[:, None],
        "has_instruction": has,
        "short_sids": c[torch.randint(0, len(codes), (n, 20), generator=g)],
        "short_mask": torch.arange(20)[None] < torch.randint(1, 21, (n, 1), generator=g),
        "long_sids": c[torch.randint(0, len(codes), (n, 100), generator=g)],
        "long_mask": torch.arange(100)[None] < torch.randint(1, 101, (n, 1), generator=g),
    }


def run(group_size: int, args, model, trie, contexts, reward_fn) -> dict:
    policy = GeneratorPolicy(copy.deepcopy(model), trie)
    reference = GeneratorPolicy(copy.deepcopy(model), trie)
    prompts = PromptSet(contexts, len(SCENARIOS), PromptConfig(batch_size=args.prompts, synthetic_share=0.2))
    config = RLConfig(algorithm=args.algorithm, group_size=group_size, lr=1e-4, steps=args.steps, seed=0)
    trainer = GroupPolicyTrainer(policy, reward_fn, config, reference)
    gen = torch.Generator().manual_seed(0)
    trainer.step(prompts(0, gen))  # warm-up
    start = time.perf_counter()
    for step in range(args.steps):
        trainer.step(prompts(step + 1, gen))
    seconds = time.perf_counter() - start
    steps_per_s = args.steps / seconds
    last = trainer.history[-1]
    return {
        "group_size": group_size,
        "prompts_per_step": args.prompts,
        "steps": args.steps,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps_per_s, 3),
        "prompts_per_s": round(steps_per_s * args.prompts, 2),
        "sequences_per_s": round(steps_per_s * args.prompts * group_size, 1),
        "last_step": {k: last[k] for k in ("reward_mean", "kl_after", "entropy", "loss")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--algorithm", default="sagcpo", choices=["grpo", "gspo", "sagcpo"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    codes, vocab = random_codes(args.items)
    trie = SIDTrie.from_codes(codes, vocab)
    cfg = GeneratorConfig(vocab_sizes=vocab, n_scenarios=len(SCENARIOS), profile_vocab_size=64, n_profile_fields=3,
                          d_model=128, n_heads=4, enc_layers=2, dec_layers=2, max_short=20, max_long=100, igr_top_k=20)
    model = OxygenGenerator(cfg)
    contexts = random_contexts(2000, codes)
    item_x = torch.randn(args.items, ITEM_DIM, generator=torch.Generator().manual_seed(1))
    reward_net = RewardModel(RewardModelConfig(user_dim=384 + ITEM_DIM, item_dim=ITEM_DIM, num_scenarios=len(SCENARIOS)))
    mapping = mapping_for_scenarios(SCENARIOS, {}, {"click": 1.0, "cart": 0.5, "order": 0.5})
    reward_fn = make_reward_fn(reward_net.eval(), mapping, item_x, trie)

    load_start = list(os.getloadavg())
    runs = []
    for g in args.groups:
        runs.append(run(g, args, model, trie, contexts, reward_fn))
        print(runs[-1], flush=True)
    write_results("rl", {
        "model": {"d_model": cfg.d_model, "enc_layers": cfg.enc_layers, "dec_layers": cfg.dec_layers,
                  "parameters": model.num_parameters, "vocab_sizes": list(vocab), "items": args.items},
        "algorithm": args.algorithm,
        "threads": args.threads,
        "runs": runs,
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    })


if __name__ == "__main__":
    main()
