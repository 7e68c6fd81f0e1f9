"""Benchmark: RQ-KMeans semantic-ID fitting on clustered 384-d vectors.

For each N, a fresh subprocess (so peak RSS is per N) generates N float32 vectors around
2000 Gaussian centres (x = mu_z + sigma * eps, mu ~ N(0, I/D), sigma = 0.5, z uniform),
fits L=3 levels x K=256 codes (fit_encode: fit, then encode all N), and records wall times,
Lloyd iterations, peak RSS (resource.getrusage ru_maxrss) and SID quality metrics.
Results go to bench/results/semantic_ids.json (merged by N + settings).

    python bench/semantic_ids.py [--sizes 100000 1000000] [--assignment plain|balanced]

Targets on the 2-core box: 100k < 60 s; 1M < 10 min and < 8 GB RSS. N >= --sample-threshold
rows are fitted on a random subset of --fit-sample-size rows (all rows are still encoded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "semantic_ids.json"


def make_data(n: int, dim: int, n_centers: int, sigma: float, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = (rng.standard_normal((n_centers, dim)) / np.sqrt(dim)).astype(np.float32)
    labels = rng.integers(0, n_centers, n)
    x = np.empty((n, dim), dtype=np.float32)
    step = 65536
    for s in range(0, n, step):  # chunked: no float64 (N, D) temporary
        e = min(s + step, n)
        noise = rng.standard_normal((e - s, dim), dtype=np.float32) * np.float32(sigma / np.sqrt(dim))
        x[s:e] = centers[labels[s:e]] + noise
    return x, labels


def worker(args) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from models.semantic_ids import RQKMeansConfig, fit_encode, semantic_id_quality

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    x, labels = make_data(args.n, args.dim, args.centers, args.sigma, args.seed)
    t_gen = time.perf_counter() - t0
    sample = args.fit_sample_size if args.n >= args.sample_threshold else None
    cfg = RQKMeansConfig(
        levels=args.levels,
        codebook_size=args.codebook_size,
        max_iter=args.max_iter,
        tol=args.tol,
        assignment=args.assignment,
        fit_sample_size=sample,
        seed=args.seed,
    )
    t1 = time.perf_counter()
    cb, codes = fit_encode(x, cfg)
    t_fit = time.perf_counter() - t1
    t2 = time.perf_counter()
    codes2 = cb.encode(x)
    t_encode = time.perf_counter() - t2
    assert np.array_equal(codes, codes2)
    t3 = time.perf_counter()
    metrics, _ = semantic_id_quality(codes, labels, cfg.codebook_size)
    t_metrics = time.perf_counter() - t3
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = ru.ru_maxrss / 1024  # KB on Linux
    keep = [
        "l1_coverage", "l2_coverage", "l3_coverage", "l1_purity", "l1_entropy", "l1_gini",
        "l2_entropy", "l3_entropy", "collision_max", "collision_p99", "collision_p999",
        "collision_mean", "collision_share", "n_unique_ids",
    ]
    return {
        "n": args.n,
        "dim": args.dim,
        "n_centers": args.centers,
        "sigma": args.sigma,
        "config": {
            "levels": cfg.levels, "codebook_size": cfg.codebook_size, "max_iter": cfg.max_iter,
            "tol": cfg.tol, "assignment": cfg.assignment, "fit_sample_size": cfg.fit_sample_size,
            "chunk_size": cfg.chunk_size, "init_rounds": cfg.init_rounds, "seed": cfg.seed,
        },
        "gen_s": round(t_gen, 2),
        "fit_encode_s": round(t_fit, 2),  # fit on sample/all + encode all N
        "encode_s": round(t_encode, 2),  # encode all N again (serving/incremental path)
        "metrics_s": round(t_metrics, 2),
        "n_iter_per_level": cb.fit_info["n_iter"],
        "n_fit_rows": cb.fit_info["n_fit_rows"],
        "peak_rss_mb": round(rss_mb, 1),
        # CPU seconds of the whole worker (gen + fit + encode + metrics): less sensitive than wall
        # time to other jobs sharing the 2 cores (compare with loadavg).
        "worker_cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "quality": {k: metrics[k] for k in keep},
        "targets": {
            "time_s": 60 if args.n <= 100_000 else 600,
            "rss_mb": 8192,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--centers", type=int, default=2000)
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--max-iter", type=int, default=50)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--assignment", default="plain", choices=["plain", "balanced"])
    p.add_argument("--fit-sample-size", type=int, default=200_000)
    p.add_argument("--sample-threshold", type=int, default=500_000, help="use the fit sample from this N on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker is not None:
        args.n = args.worker
        print(json.dumps(worker(args)))
        return

    passthrough = [
        "--dim", str(args.dim), "--centers", str(args.centers), "--sigma", str(args.sigma),
        "--levels", str(args.levels), "--codebook-size", str(args.codebook_size),
        "--max-iter", str(args.max_iter), "--tol", str(args.tol), "--assignment", args.assignment,
        "--fit-sample-size", str(args.fit_sample_size), "--sample-threshold", str(args.sample_threshold),
        "--seed", str(args.seed),
    ]
    runs = []
    for n in args.sizes:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", str(n), *passthrough],
            capture_output=True, text=True, cwd=ROOT,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"worker for N={n} failed with exit code {proc.returncode}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["subprocess_wall_s"] = round(time.perf_counter() - t, 2)
        res["pass"] = bool(res["fit_encode_s"] < res["targets"]["time_s"] and res["peak_rss_mb"] < res["targets"]["rss_mb"])
        print(json.dumps(res), flush=True)
        runs.append(res)

    # Merge with earlier results so running one size does not drop the other.
    old = []
    if args.out.exists():
        try:
            old = json.loads(args.out.read_text()).get("runs", [])
        except (json.JSONDecodeError, AttributeError):
            old = []
    key = lambda r: (r["n"], r["config"]["assignment"], r["config"]["fit_sample_size"])  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in runs})
    out = {
        "benchmark": "semantic_ids",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs": sorted(merged.values(), key=lambda r: (r["n"], r["config"]["assignment"])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
