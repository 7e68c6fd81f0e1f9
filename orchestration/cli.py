"""``oxyrec``: recommend from the served model, or serve the published model repository.

    oxyrec recommend --user u00042 --scenario cart --k 10 [--protocol grpc] [--url HOST:PORT]
    oxyrec serve [--http-port 8000 --grpc-port 8001]
"""

from __future__ import annotations

import argparse
import signal
import sys

from .settings import current_settings


def _recommend(args) -> int:
    from .serving.recommend import Recommender

    settings = current_settings()
    url = args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000")
    recommender = Recommender.from_data_dir(settings.data_root, url, protocol=args.protocol,
                                            online=settings.features.online_store,
                                            redis_url=settings.features.redis_url)
    table = recommender.recommend(args.user, args.scenario, k=args.k, beam_width=args.beam)
    features = recommender.last_features
    print(f"user {args.user} in {args.scenario} (known user: {features.get('known_user')})")
    print(f"instruction: {features.get('instruction_text') or '(default instruction)'}")
    print(table.to_string(index=False))
    return 0


def _serve(args) -> int:
    from models.export.repository import MODELS

    from .serving import TritonServer, ensure_tritonserver

    repo = current_settings().data_root / "triton_repository"
    if not repo.is_dir():
        print(f"{repo} does not exist: run `make demo` (or the deploy job) first", file=sys.stderr)
        return 2
    server = TritonServer(repo, http_port=args.http_port, grpc_port=args.grpc_port, host=args.host,
                          home=ensure_tritonserver()).start()
    try:
        loaded = server.load_all(MODELS)
        print(f"serving {repo} on http://{server.http_url} and grpc {server.grpc_url}: {sorted(loaded)}")
        print("Ctrl-C to stop")
        # block only after the server started: a child inherits the signal mask
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oxyrec", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recommend", help="top-k items for one user in one scenario, served by Triton")
    rec.add_argument("--user", required=True)
    rec.add_argument("--scenario", required=True)
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument("--beam", type=int, default=20)
    rec.add_argument("--protocol", choices=["http", "grpc"], default="http")
    rec.add_argument("--url", help="HOST:PORT (default 127.0.0.1:8000 http, :8001 grpc)")
    rec.set_defaults(run=_recommend)
    serve = sub.add_parser("serve", help="serve data/triton_repository with a local tritonserver")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
