"""``make bench``: run every benchmark in its own process (separate peak-memory readings)."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ["-m", "bench.embeddings"],
    ["bench/semantic_ids.py"],
    ["bench/decoding.py"],
    ["-m", "bench.reasoning"],
    ["-m", "bench.feast_online"],
    ["-m", "bench.incremental_instructions"],
    ["bench/sasrec_movielens.py"],
    ["bench/sft.py"],
    ["bench/rl.py"],
    ["bench/triton_serving.py"],
]


def main() -> int:
    failed = 0
    for args in BENCHMARKS:
        print(f"== {' '.join(args)}", flush=True)
        failed += subprocess.call([sys.executable, *args]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
