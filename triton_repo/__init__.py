"""Serving: the Triton model repository templates (``templates/``) and everything that runs against a server.

    install.py      the CPU tritonserver binary from the nvidia-pytriton wheel (downloaded once, venv stays clean)
    server.py       TritonServer (a local tritonserver process), ModelControl (load/unload/ready of any server)
    client.py       TritonRecommender: tritonclient calls of oxygenrec_generate, pinned to a version
    recommend.py    Recommender: Feast online features -> the serving version's encoder -> Triton
    request_log.py  bounded log of served requests (replayed by the canary)
    deploy.py       staged rollout: candidate, smoke test, canary, promotion, rollback, lock, pruning
    cli.py          ``oxyrec recommend`` / ``oxyrec serve``

The repository itself (ONNX export, version directories, client metadata) is written by models/export.
Nothing here imports Dagster; tritonclient and Feast are imported when a client is used.
"""

from .install import TritonInstallError, ensure_tritonserver
from .server import ModelControl, TritonServer, TritonServerError, free_port

__all__ = ["ModelControl", "TritonInstallError", "ensure_tritonserver", "TritonServer", "TritonServerError",
           "free_port", "TritonRecommender"]


def __getattr__(name: str):
    if name == "TritonRecommender":  # tritonclient is imported only when the client is used
        from .client import TritonRecommender

        return TritonRecommender
    raise AttributeError(name)
