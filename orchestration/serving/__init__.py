"""Serving: install and run a real tritonserver (CPU, python backend) on the exported model repository,
and a tritonclient-based recommender client. The model repository itself is written by models/export."""

from .install import TritonInstallError, ensure_tritonserver
from .server import TritonServer, TritonServerError, free_port

__all__ = ["TritonInstallError", "ensure_tritonserver", "TritonServer", "TritonServerError", "free_port",
           "TritonRecommender"]


def __getattr__(name: str):
    if name == "TritonRecommender":  # tritonclient is imported only when the client is used
        from .client import TritonRecommender

        return TritonRecommender
    raise AttributeError(name)
