"""Serving load and soak test: locust (programmatic, gevent users) driving tritonclient against a REAL tritonserver on
127.0.0.1, bounded in time and requests.

    python -m bench.serving_load [--quick] [--cell-seconds 10] [--soak-seconds 300] [--max-requests 5000]

Setup (no training; bench/serving_world.py): a synthetic world of ``--users`` users and 5,000 items in a real Feast
store (SQLite online), random 3 x 256 semantic IDs, the demo-size generator (d_model 128, 2 + 2 layers, random
weights) exported with its example encoder and deployed (oxygenrec_generate) through triton_repo/deploy.py (ServingConfig defaults:
max_batch_size 8, dynamic batching 200 us, one CPU instance, 1 ORT/torch thread). The request inputs are the
online features of the world's users, encoded with the serving version's metadata (as the client does).

Phases (each locust user = one greenlet with its own tritonclient HTTP connection, no wait between requests, so
concurrency = requests in flight):
* sweep: concurrency 1, 2, 4, 8, 16 x beam 16 / 64 / 256 x batch 1 / 8 (users per request) on oxygenrec_generate:
  p50 / p99 (exact, from every request's latency) and throughput (requests/s and users/s), ``--cell-seconds`` each
  after a warm-up, at most ``--max-requests``;
* end to end: the Recommender (Feast online read -> the serving version's encoder -> Triton, one request per user,
  beam 64, top 10) at concurrency 1 / 4 / 16;
* soak: ``--soak-seconds`` at concurrency 4, beam 64, batch 1: errors, and the RSS of tritonserver + its stubs
  sampled every 10 s (growth from minute 1 to the last minute).
Targets (2 CPU cores, beam 64, batch 1): p99 < 60 ms at concurrency 1; the highest throughput whose p99 < 100 ms.
The client shares the 2 cores with the server (and, on this machine, with other jobs): the JSON records the load
average around every phase.
"""

from __future__ import annotations

# locust patches the standard library for gevent: it must come first
import locust  # noqa: F401,I001  (imported for its gevent monkey-patching)
from locust import User, constant, task
from locust.env import Environment

import argparse
import ipaddress
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import gevent
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_results  # noqa: E402

GEN = "oxygenrec_generate"
CONCURRENCY = (1, 2, 4, 8, 16)
BEAMS = (16, 64, 256)
BATCHES = (1, 8)


def loopback_only(url: str) -> str:
    host = url.rsplit(":", 1)[0]
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"load tests target loopback addresses only, got {url}")
    return url


def latency_stats(ms: list[float], seconds: float, users_per_request: int, failures: int) -> dict:
    a = np.asarray(ms) if ms else np.zeros(1)
    return {"requests": len(ms), "failures": failures, "seconds": round(seconds, 2),
            "p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a.max()), 2), "requests_per_s": round(len(ms) / seconds, 2),
            "users_per_s": round(len(ms) * users_per_request / seconds, 2)}


def run_locust(make_call, users: int, seconds: float, max_requests: int, warmup_s: float = 1.5) -> dict:
    """``users`` locust users, each calling ``make_call()()`` back to back for ``warmup_s`` (not recorded) then up to
    ``seconds`` or ``max_requests`` recorded requests in all. Returns latencies (ms) and failure messages."""
    record = {"on": False, "ms": [], "errors": []}

    class Caller(User):
        wait_time = constant(0)

        def on_start(self):
            self.call = make_call()

        @task
        def request(self):
            t0 = time.perf_counter()
            exc = None
            try:
                self.call()
            except Exception as e:  # noqa: BLE001 - counted as a failure
                exc = e
            ms = (time.perf_counter() - t0) * 1e3
            self.environment.events.request.fire(request_type="triton", name="call", response_time=ms,
                                                 response_length=0, exception=exc, context={})
            if record["on"]:
                if exc is None:
                    record["ms"].append(ms)
                else:
                    record["errors"].append(f"{type(exc).__name__}: {str(exc)[:200]}")

    env = Environment(user_classes=[Caller])
    runner = env.create_local_runner()
    runner.start(user_count=users, spawn_rate=users)
    gevent.sleep(warmup_s)
    record["on"] = True
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline and runner.state not in ("stopped", "stopping") \
            and len(record["ms"]) + len(record["errors"]) < max_requests:
        gevent.sleep(0.05)
    record["on"] = False
    elapsed = time.perf_counter() - t0
    runner.quit()
    stats = env.stats.total
    record["locust"] = {"num_requests": stats.num_requests, "num_failures": stats.num_failures,
                        "median_ms": stats.median_response_time, "p99_ms": stats.get_response_time_percentile(0.99)}
    record["seconds"] = elapsed
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s cells, concurrency 1/4, beam 64, 20 s soak (smoke run)")
    ap.add_argument("--cell-seconds", type=float, default=10.0)
    ap.add_argument("--soak-seconds", type=float, default=300.0)
    ap.add_argument("--max-requests", type=int, default=5000, help="per cell / per soak")
    ap.add_argument("--users", type=int, default=500, help="users of the synthetic world")
    ap.add_argument("--name", default="serving_load")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from bench.serving_world import ServingWorldConfig, build_serving_world
    from triton_repo import ModelControl, TritonServer, ensure_tritonserver
    from triton_repo.client import TritonRecommender
    from triton_repo.deploy import deploy
    from triton_repo.recommend import Recommender
    from models.decoding import constrained_beam_search

    concurrency, beams, batches = CONCURRENCY, BEAMS, BATCHES
    cell_s, soak_s = args.cell_seconds, args.soak_seconds
    if args.quick:
        concurrency, beams, batches, cell_s, soak_s = (1, 4), (64,), (1, 8), 2.0, 20.0
    out: dict = {"load_average": {"start": list(os.getloadavg())}, "cell_seconds": cell_s, "soak_seconds": soak_s,
                 "max_requests": args.max_requests, "concurrency": list(concurrency), "complete": False,
                 "command": "python -m bench.serving_load " + " ".join(sys.argv[1:])}

    def save(result: dict) -> None:
        if not args.quick:  # a smoke run writes nothing
            write_results(args.name, result)
    tmp = Path(tempfile.mkdtemp(prefix="oxyrec-serving-load-"))
    server = None
    try:
        t0 = time.perf_counter()
        world = build_serving_world(tmp / "data", ServingWorldConfig(
            n_users=args.users, n_items=5000, n_days=30, codebook_size=256, seed=0,
            generator=dict(d_model=128, n_heads=4, enc_layers=2, dec_layers=2)))
        staged, model, trie = world.export(tmp / "staged", seed=0)
        out["setup"] = {"world_and_export_s": round(time.perf_counter() - t0, 1), "items": len(world.items),
                        "users": len(world.users), "model": model.cfg.to_dict(), "n_parameters": model.num_parameters}
        repo = tmp / "data" / "triton_repository"
        repo.mkdir()
        server = TritonServer(repo, home=ensure_tritonserver(), log_path=tmp / "triton.log").start()
        url = loopback_only(server.http_url)
        from models.export import VersionClient

        client_meta = VersionClient.load(staged / GEN / "1")
        scenario = "cart"
        users = world.active_users(scenario, 64)
        rows = world.online_rows(users, scenario)
        arrays = client_meta.inputs(rows)
        with torch.no_grad():
            expected, _ = constrained_beam_search(model, {k: torch.from_numpy(v[:4]) for k, v in arrays.items()},
                                                  trie, 20, 10)
        t0 = time.perf_counter()
        # clients call oxygenrec_generate only: deploy just that one (the candidate's stub exits a few s later)
        deploy(ModelControl(url), url, repo, staged, {k: v[:4] for k, v in arrays.items()}, expected.numpy(), 20, 10,
               models=(GEN,))
        out["setup"]["deploy_s"] = round(time.perf_counter() - t0, 1)
        deadline = time.monotonic() + 30
        while len(server.stub_pids()) > 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"setup done: {out['setup']}", flush=True)

        # ---------------------------------------------------------------- warm-up: every (batch, beam) shape once
        t0 = time.perf_counter()
        with TritonRecommender(url, version="1") as rec:
            for batch in batches:
                for beam in beams:
                    for _ in range(5):
                        rec.recommend({k: v[:batch] for k, v in arrays.items()}, beam_width=beam, top_k=min(beam, 10))
        out["setup"]["warmup_s"] = round(time.perf_counter() - t0, 1)

        # ---------------------------------------------------------------- sweep
        sweep = []
        for batch in batches:
            for beam in beams:
                for c in concurrency:
                    def make_call(batch=batch, beam=beam):
                        rec = TritonRecommender(url, version="1")
                        rng = np.random.default_rng()

                        def call():
                            i = int(rng.integers(0, len(users) - batch + 1))
                            rec.recommend({k: v[i : i + batch] for k, v in arrays.items()}, beam_width=beam,
                                          top_k=min(beam, 10))
                        return call

                    before = server.inference_stats(GEN)
                    r = run_locust(make_call, c, cell_s, args.max_requests)
                    after = server.inference_stats(GEN)
                    batching = {k: after["batching"][k] - before["batching"][k] for k in after["batching"]}
                    n_exec = max(1, batching["execution_count"])
                    server_ms = {k: round((after[k]["ns"] - before[k]["ns"]) / max(1, after[k]["count"] - before[k]["count"])
                                          / 1e6, 2) for k in ("queue", "compute_infer")}
                    row = {"batch": batch, "beam": beam, "concurrency": c,
                           **latency_stats(r["ms"], r["seconds"], batch, len(r["errors"])),
                           "locust": r["locust"],
                           "server_ms_per_request": server_ms, "users_per_execution":
                               round(batching["inference_count"] / n_exec, 2),
                           "errors": r["errors"][:3], "loadavg_1m": os.getloadavg()[0]}
                    sweep.append(row)
                    print(f"batch {batch} beam {beam:3d} c {c:2d}: p50 {row['p50_ms']:7.1f} p99 {row['p99_ms']:7.1f} ms "
                          f"{row['requests_per_s']:6.1f} req/s  n={row['requests']} fail={row['failures']}  server queue/compute "
                          f"{server_ms['queue']}/{server_ms['compute_infer']} ms, {row['users_per_execution']} users/exec",
                          flush=True)
                    out["sweep"] = sweep
                    save(out)  # after every cell: a killed run keeps what it measured
        out["load_average"]["after_sweep"] = list(os.getloadavg())

        # ---------------------------------------------------------------- end to end
        e2e = []
        pairs = [(u, s) for s in world.scenarios for u in world.active_users(s, 20)]
        for c in ((1, 4) if args.quick else (1, 4, 16)):
            def make_e2e():
                rec = Recommender(world.store, repo, url, request_log=None)
                rng = np.random.default_rng()

                def call():
                    u, s = pairs[int(rng.integers(0, len(pairs)))]
                    table = rec.recommend(u, s, k=10, beam_width=64)
                    if len(table) != 10:
                        raise RuntimeError(f"{len(table)} items for {u}/{s}")
                return call

            r = run_locust(make_e2e, c, cell_s, args.max_requests, warmup_s=3.0)
            row = {"concurrency": c, "beam": 64, "batch": 1, **latency_stats(r["ms"], r["seconds"], 1, len(r["errors"])),
                   "locust": r["locust"], "errors": r["errors"][:3], "loadavg_1m": os.getloadavg()[0]}
            e2e.append(row)
            print(f"end to end c {c:2d}: p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} ms {row['requests_per_s']:.1f} req/s "
                  f"fail={row['failures']}", flush=True)
            out["end_to_end"] = e2e
            save(out)

        # ---------------------------------------------------------------- soak
        samples = []

        def sample_rss():
            t_start = time.perf_counter()
            while True:
                rss = server.rss_mb()
                samples.append({"t_s": round(time.perf_counter() - t_start, 1), **{k: round(v, 1) for k, v in rss.items()},
                                "total": round(rss["server"] + rss["stubs"], 1)})
                gevent.sleep(10.0)

        sampler = gevent.spawn(sample_rss)

        def make_soak():
            rec = TritonRecommender(url, version="1")
            rng = np.random.default_rng()

            def call():
                i = int(rng.integers(0, len(users)))
                rec.recommend({k: v[i : i + 1] for k, v in arrays.items()}, beam_width=64, top_k=10)
            return call

        r = run_locust(make_soak, 4, soak_s, args.max_requests * 100, warmup_s=0.5)
        sampler.kill()
        first = next((s for s in samples if s["t_s"] >= min(60.0, soak_s / 5)), samples[0])
        last = samples[-1]
        growth = (last["total"] - first["total"]) / first["total"]
        out["soak"] = {"concurrency": 4, "beam": 64, "batch": 1, **latency_stats(r["ms"], r["seconds"], 1, len(r["errors"])),
                       "errors": r["errors"][:5], "rss_mb": samples, "rss_from_t_s": first["t_s"], "rss_to_t_s": last["t_s"],
                       "rss_growth": round(growth, 4),
                       "passed": bool(not r["errors"] and growth < 0.05)}
        out["load_average"]["after_soak"] = list(os.getloadavg())
        print(f"soak {soak_s:.0f} s: {len(r['ms'])} requests, {len(r['errors'])} errors, RSS {first['total']} -> "
              f"{last['total']} MB ({growth:+.2%})", flush=True)

        target = next((row for row in sweep if row["batch"] == 1 and row["beam"] == 64 and row["concurrency"] == 1), None)
        ok = [row for row in sweep if row["batch"] == 1 and row["beam"] == 64 and row["p99_ms"] < 100 and not row["failures"]]
        best = max(ok, key=lambda row: row["requests_per_s"], default=None)
        out["targets"] = {
            "p99_beam64_batch1_c1_ms": target and target["p99_ms"], "p99_limit_ms": 60.0,
            "p99_met": bool(target and target["p99_ms"] < 60.0),
            "max_qps_p99_under_100ms": best and best["requests_per_s"],
            "at_concurrency": best and best["concurrency"], "its_p99_ms": best and best["p99_ms"],
        }
        out["load_average"]["end"] = list(os.getloadavg())
        out["description"] = ("locust users driving tritonclient (HTTP) against oxygenrec_generate on 127.0.0.1; "
                              "client and server share the machine's cores")
        out["complete"] = True
        save(out)
        print(out["targets"])
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
