"""oxyrec: recommendations from the model Triton serves, or a local tritonserver over the published repository.

  oxyrec recommend --user u00042 --scenario cart [--k 10] [--beam 20] [--protocol http|grpc] [--url HOST:PORT] [--json]
  oxyrec serve [--host 127.0.0.1] [--http-port 8000] [--grpc-port 8001] [--repository DIR]

exit codes:
  0  ok
  1  runtime error (server down, model not loaded, missing data, server died): one line on stderr
  2  usage error (unknown option, bad --k/--beam, unknown scenario)

environment:
  OXYREC_TRITON_URL  host:port of Triton's HTTP endpoint (the pipeline's deploy target): the default --url for http
  OXYREC_HOME        data directory (feature store, model repository, request log); OXYREC_CONFIG: params file
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
DEFAULT_HTTP, DEFAULT_GRPC = "127.0.0.1:8000", "127.0.0.1:8001"


class UsageError(Exception):
    """Bad arguments found after parsing (e.g. a scenario the served version does not know)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {value}")
    return value


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def default_url(protocol: str) -> str:
    if protocol == "http":
        return os.environ.get("OXYREC_TRITON_URL") or DEFAULT_HTTP
    return DEFAULT_GRPC


# ---------------------------------------------------------------------------------------------- recommend
def _recommend(args) -> int:
    from orchestration.settings import current_settings

    from .client import TritonRecommender
    from .recommend import Recommender

    url = args.url or default_url(args.protocol)
    settings = current_settings()
    root = settings.data_root
    repository = Path(args.repository) if args.repository else root / "triton_repository"
    with TritonRecommender(url, protocol=args.protocol, timeout=args.timeout) as probe:
        probe.serving_version()  # fail fast (before Feast and the encoder load) when the server or model is missing
    recommender = Recommender.from_data_dir(root, url, protocol=args.protocol, online=settings.features.online_store,
                                            redis_url=settings.features.redis_url, repository=repository)
    with recommender:
        scenarios = recommender.scenarios
        if args.scenario not in scenarios:
            raise UsageError(f"unknown scenario {args.scenario!r}; the served version knows {list(scenarios)}")
        table = recommender.recommend(args.user, args.scenario, k=args.k, beam_width=max(args.beam, args.k))
        features = recommender.last_features
        version = recommender.last_version
    instruction = features.get("instruction_text") or ""
    if args.json:
        print(json.dumps({"user": args.user, "scenario": args.scenario, "url": url, "protocol": args.protocol,
                          "version": version, "known_user": bool(features.get("known_user")),
                          "instruction": instruction or None,
                          "items": [{"rank": int(r.rank), "item_id": r.item_id, "score": float(r.score), "title": r.title}
                                    for r in table.itertuples()]}))
        return EXIT_OK
    print(f"user {args.user} in {args.scenario} (known user: {bool(features.get('known_user'))}), "
          f"served by {url} version {version}")
    print(f"instruction: {instruction or '(default instruction)'}")
    print(table.to_string(index=False))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- serve
def _serve(args) -> int:
    from models.export.repository import MODELS

    from .server import TritonServer
    from .install import ensure_tritonserver

    if args.repository:
        repo = Path(args.repository)
    else:
        from orchestration.settings import current_settings

        repo = current_settings().data_root / "triton_repository"
    models = [m for m in MODELS if (repo / m / "config.pbtxt").is_file()]
    if not models:
        raise FileNotFoundError(f"{repo} holds no published model: run `make demo` (or the deploy job) first")
    server = TritonServer(repo, http_port=args.http_port, grpc_port=args.grpc_port, host=args.host,
                          home=ensure_tritonserver()).start()
    try:
        server.load_all(models)
        print(f"serving {repo} on http://{server.http_url} and grpc {server.grpc_url}: {', '.join(models)}", flush=True)
        print("Ctrl-C to stop", flush=True)
        # block the signals only now: the server (a child) must not inherit the mask
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        while server.running():
            if signal.sigtimedwait(signals, 0.5) is not None:
                return EXIT_OK
        code = server.proc.returncode if server.proc is not None else None
        last = server.log_tail(1).strip()
        raise RuntimeError(f"tritonserver exited with code {code} while serving (log {server.log_path}: {last[:200]})")
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oxyrec", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{recommend,serve}")
    rec = sub.add_parser("recommend", help="top-k items for one user in one scenario, served by Triton",
                         description="Feast online features -> the serving version's encoder -> Triton; prints the "
                                     "instruction and the items (exit codes: 0 ok, 1 runtime error, 2 usage).")
    rec.add_argument("--user", required=True, help="user id (unknown users get the default features)")
    rec.add_argument("--scenario", required=True, help="scenario name, one the served model version knows (e.g. cart)")
    rec.add_argument("--k", type=_positive_int, default=10, help="number of items to return (default 10)")
    rec.add_argument("--beam", type=_positive_int, default=20, help="beam width of the constrained beam search "
                                                                     "(default 20; raised to --k if smaller)")
    rec.add_argument("--protocol", choices=["http", "grpc"], default="http", help="Triton protocol (default http)")
    rec.add_argument("--url", help=f"Triton HOST:PORT (default: $OXYREC_TRITON_URL or {DEFAULT_HTTP} for http, "
                                   f"{DEFAULT_GRPC} for grpc)")
    rec.add_argument("--repository", help="model repository the server serves (default <data>/triton_repository): "
                                          "each version's encoder metadata is read from it")
    rec.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    rec.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    rec.set_defaults(run=_recommend)
    serve = sub.add_parser("serve", help="serve the published model repository with a local tritonserver",
                           description="Start tritonserver (CPU, python backend) on the published repository and "
                                       "load its models; stops on Ctrl-C/SIGTERM (exit 0), exits 1 if the server dies.")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    serve.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default 8000)")
    serve.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001)")
    serve.add_argument("--repository", help="model repository (default <data>/triton_repository)")
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    if args.command == "recommend" and args.k > 1024:
        parser.error(f"--k must be <= 1024 (the served model's maximum beam), got {args.k}")
    try:
        return args.run(args)
    except UsageError as e:
        parser.error(str(e))  # exits 2
    except KeyboardInterrupt:
        print("oxyrec: interrupted", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as e:  # noqa: BLE001 - the CLI's contract: one line, exit 1
        print(f"oxyrec {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
