"""oxygenrec_encoder: the exported encoder graph (model.onnx) behind Triton, one ONNX run per batch of requests.

Loads files only from its own version directory (model.onnx, oxygenrec_runtime.py, manifest.json, checked
against the manifest's sha256). Inputs are read with DLPack and outputs sent with ``Tensor.from_dlpack``
(``as_numpy`` / ``Tensor(name, ndarray)`` are broken under numpy 2, see triton_repo/README.md).
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


def _runtime(version_dir: Path, tag: str):
    name = f"oxygenrec_runtime_{tag}"
    spec = importlib.util.spec_from_file_location(name, version_dir / "oxygenrec_runtime.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class TritonPythonModel:
    def initialize(self, args):
        vdir = Path(args["model_repository"]) / str(args["model_version"])
        self.rt = rt = _runtime(vdir, f"encoder_{args['model_version']}")
        manifest = rt.verify_version_dir(vdir)
        config = json.loads(args["model_config"])
        torch.set_num_threads(int(rt.parameter(config, "TORCH_THREADS", "1")))
        self.c = manifest["interface"]["constants"]
        self.session = rt.make_session(vdir / "model.onnx", int(rt.parameter(config, "ORT_THREADS", "1")))

    def _read(self, request):
        a = self.rt.read_request(pb_utils, request, self.rt.ENCODER_INPUTS)
        a["scenario"], a["has_instruction"] = a["scenario"].reshape(-1), a["has_instruction"].reshape(-1)
        self.rt.check_encoder_inputs(a, self.c)
        return self.rt.shape_key(a), a

    def _run(self, key, arrays):
        outs = self.session.run(None, {k: np.ascontiguousarray(arrays[k]) for k in self.rt.ENCODER_INPUTS})
        return {name: torch.from_numpy(v) for name, v in zip(self.rt.ENCODER_OUTPUTS, outs)}

    def execute(self, requests):
        return self.rt.execute_batched(pb_utils, requests, self._read, self._run, "scenario")

    def finalize(self):
        self.session = None
