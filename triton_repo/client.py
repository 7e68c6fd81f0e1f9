"""Client of the ``oxygenrec_generate`` Triton model (tritonclient, HTTP or gRPC).

The caller (a gateway, or the pipeline's smoke test) does the feature lookup (Feast online read) and passes the
encoder's arrays (see models/export/onnx_export.serving_arrays; instruction_age is optional): the Triton repository stays stateless.

    with TritonRecommender("127.0.0.1:8000") as rec:
        items, scores = rec.recommend(arrays, beam_width=64, top_k=20)     # [B, 20] catalog rows, log-probs
        ids = rec.last_item_ids                                            # [[str]] decoded from UTF-8 bytes

Batches larger than the model's max_batch_size are split into several requests. ``version`` pins every request
to one model version ("" = Triton's choice, i.e. the highest loaded version); :meth:`serving_version` asks the
server which version clients must address (the ``SERVING_VERSION`` parameter the deployment sets in the model's
config, else the highest loaded version). Every answer's ``model_version`` is checked against the pinned version
(``last_version`` holds it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TritonRecommender", "GENERATE_INPUTS", "ServingVersionError"]

GENERATE_INPUTS = ("scenario", "profile", "profile_mask", "instruction_emb", "has_instruction",
                   "short_sids", "short_mask", "long_sids", "long_mask")
OPTIONAL_INPUTS = ("instruction_age",)  # sent when the arrays carry it (optional in config.pbtxt)
_DTYPES = {"scenario": (np.int64, "INT64"), "profile": (np.int64, "INT64"), "profile_mask": (np.bool_, "BOOL"),
           "instruction_emb": (np.float32, "FP32"), "has_instruction": (np.bool_, "BOOL"),
           "short_sids": (np.int64, "INT64"), "short_mask": (np.bool_, "BOOL"), "long_sids": (np.int64, "INT64"),
           "long_mask": (np.bool_, "BOOL"), "instruction_age": (np.float32, "FP32"),
           "beam_width": (np.int32, "INT32"), "top_k": (np.int32, "INT32")}
_OUTPUTS = ("item_index", "score", "item_id")
# = models.export.repository.SERVING_PARAM / SERVING_SHA_PARAM (no models import in the client)
SERVING_PARAM, SERVING_SHA_PARAM = "SERVING_VERSION", "SERVING_MANIFEST_SHA256"


class ServingVersionError(RuntimeError):
    """The server cannot say which version serves, or answered from another version than the one asked for."""


class TritonRecommender:
    def __init__(self, url: str, protocol: str = "http", model: str = "oxygenrec_generate", version: str = "",
                 timeout: float = 60.0) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url, self.protocol, self.model, self.version, self.timeout = url, protocol, model, str(version), timeout
        if protocol == "http":
            import tritonclient.http as tc

            self._client = tc.InferenceServerClient(url, network_timeout=timeout, connection_timeout=timeout)
        else:
            import tritonclient.grpc as tc

            self._client = tc.InferenceServerClient(url)
        self._tc = tc
        self._max_batch: int | None = None
        self.last_item_ids: list[list[str]] = []
        self.last_version: str = ""

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "TritonRecommender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: open keep-alive connections delay server shutdown
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def serving(self) -> tuple[int, str | None]:
        """(version, manifest sha256 or None) clients must address: ``SERVING_VERSION`` and
        ``SERVING_MANIFEST_SHA256`` from the model's loaded config, else the highest version Triton has loaded
        (no identity). ServingVersionError when the model is not loaded."""
        from tritonclient.utils import InferenceServerException

        try:
            if self.protocol == "http":
                params = {k: v.get("string_value", "") for k, v in
                          self._client.get_model_config(self.model).get("parameters", {}).items()}
            else:
                params = {k: v.string_value for k, v in self._client.get_model_config(self.model).config.parameters.items()}
            if params.get(SERVING_PARAM):
                return int(params[SERVING_PARAM]), params.get(SERVING_SHA_PARAM) or None
            meta = self._client.get_model_metadata(self.model)
            versions = meta.get("versions", []) if self.protocol == "http" else list(meta.versions)
        except InferenceServerException as e:
            raise ServingVersionError(f"{self.model!r} is not served at {self.url}: {e}") from e
        if not versions:
            raise ServingVersionError(f"{self.model!r} at {self.url} has no loaded version")
        return max(int(v) for v in versions), None

    def serving_version(self) -> int:
        return self.serving()[0]

    @property
    def max_batch_size(self) -> int:
        if self._max_batch is None:
            cfg = self._client.get_model_config(self.model, self.version)
            if self.protocol == "grpc":
                cfg = {"max_batch_size": cfg.config.max_batch_size}
            self._max_batch = int(cfg.get("max_batch_size", 0)) or 1 << 30
        return self._max_batch

    # ------------------------------------------------------------------ inference
    def _request(self, arrays: dict[str, np.ndarray], version: str):
        tc = self._tc
        inputs = []
        for name, arr in arrays.items():
            inp = tc.InferInput(name, list(arr.shape), _DTYPES[name][1])
            if self.protocol == "http":
                inp.set_data_from_numpy(arr, binary_data=True)
            else:
                inp.set_data_from_numpy(arr)
            inputs.append(inp)
        if self.protocol == "http":
            outputs = [tc.InferRequestedOutput(n, binary_data=True) for n in _OUTPUTS]
            res = self._client.infer(self.model, inputs, model_version=version, outputs=outputs)
            answered = str(res.get_response().get("model_version", ""))
        else:
            outputs = [tc.InferRequestedOutput(n) for n in _OUTPUTS]
            res = self._client.infer(self.model, inputs, model_version=version, outputs=outputs,
                                     client_timeout=self.timeout)
            answered = str(res.get_response().model_version)
        if version and answered != version:
            raise ServingVersionError(f"asked {self.model!r} version {version}, version {answered!r} answered")
        self.last_version = answered
        return res

    def recommend(self, batch_arrays: dict, beam_width: int, top_k: int,
                  version: int | str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(item_indices Int64[B, top_k] (catalog rows, -1 = none), scores Float32[B, top_k] log-probs), best first.
        ``batch_arrays``: the encoder arrays for B users (numpy or torch); ids land in ``last_item_ids``.
        ``version`` overrides the client's pinned version for this call."""
        version = self.version if version is None else str(version)
        if self._client is None:
            raise RuntimeError("TritonRecommender is closed")
        missing = [k for k in GENERATE_INPUTS if k not in batch_arrays]
        if missing:
            raise ValueError(f"batch_arrays is missing {missing}")
        arrays = {}
        for k in (*GENERATE_INPUTS, *(k for k in OPTIONAL_INPUTS if k in batch_arrays)):
            v = batch_arrays[k]
            v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            arrays[k] = np.ascontiguousarray(v.astype(_DTYPES[k][0], copy=False))
        b = arrays["scenario"].reshape(-1).shape[0]
        arrays["scenario"] = arrays["scenario"].reshape(b, 1)  # per-user scalars travel as [B, 1]
        for k in ("has_instruction", *OPTIONAL_INPUTS):
            if k in arrays:
                arrays[k] = arrays[k].reshape(b, 1)
        arrays["beam_width"] = np.full((b, 1), int(beam_width), np.int32)
        arrays["top_k"] = np.full((b, 1), int(top_k), np.int32)
        items, scores, ids = [], [], []
        step = self.max_batch_size
        for s in range(0, b, step):
            res = self._request({k: np.ascontiguousarray(v[s : s + step]) for k, v in arrays.items()}, version)
            items.append(res.as_numpy("item_index"))
            scores.append(res.as_numpy("score"))
            raw = res.as_numpy("item_id")
            ids += [[bytes(row).rstrip(b"\0").decode("utf-8") for row in user] for user in raw]
        self.last_item_ids = ids
        return np.concatenate(items), np.concatenate(scores)
