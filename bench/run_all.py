"""``make bench [DATA=<dir>]``: run every benchmark in its own process (separate peak-memory readings).

Benchmarks on a real dataset (SASRec vs the reference protocol, instruction coverage) run when a standard-schema
folder is given (``--data``, e.g. the shared MovieLens-100K copy); nothing reads a path outside the repository
by default."""

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
    ["bench/sft.py"],
    ["bench/rl.py"],
    ["bench/triton_serving.py"],
    ["bench/serving_load.py"],  # locust sweep + end to end + 5-minute soak (about 12 minutes)
]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="a standard-schema dataset folder for the data benchmarks")
    data = parser.parse_args(argv).data
    with_data = [["-m", "bench.sasrec", "--data", data, "--seeds", "0", "1", "2"],
                 ["-m", "bench.instruction_activity", "--data", data]] if data else []
    failed = 0
    for args in [*BENCHMARKS, *with_data]:
        print(f"== {' '.join(args)}", flush=True)
        failed += subprocess.call([sys.executable, *args]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
