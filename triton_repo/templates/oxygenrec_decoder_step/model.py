"""oxygenrec_decoder_step: one incremental decoder position (model.onnx) for G beams per user.

For external callers that run their own decoding loop (e.g. a gateway, or a GPU deployment that wants the
step as its own model). ``oxygenrec_generate`` does not call it through BLS: it runs the same graph in-process
(ENVIRONMENT.md measured 0.2-0.4 ms of IPC per BLS call against 0.007 ms for the ONNX run itself).
Loads files only from its own version directory; DLPack in, ``Tensor.from_dlpack`` out.
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
        self.rt = rt = _runtime(vdir, f"decoder_step_{args['model_version']}")
        manifest = rt.verify_version_dir(vdir)
        config = json.loads(args["model_config"])
        torch.set_num_threads(int(rt.parameter(config, "TORCH_THREADS", "1")))
        self.c = manifest["interface"]["constants"]
        self.session = rt.make_session(vdir / "model.onnx", int(rt.parameter(config, "ORT_THREADS", "1")))

    def _read(self, request):
        a = self.rt.read_request(pb_utils, request, self.rt.STEP_INPUTS)
        c = self.c
        b, g = a["token"].shape
        p = a["past_k"].shape[4]
        level = p - c["n_prefix"]  # level of the token; the step predicts level + 1
        if not 0 <= level < c["n_levels"] - 1:
            raise ValueError(f"past_k holds {p} positions: a step needs {c['n_prefix']}..{c['n_prefix'] + c['n_levels'] - 2}")
        if a["past_v"].shape != a["past_k"].shape or a["past_k"].shape[:2] != (b, g):
            raise ValueError(f"past_k/past_v must be [{b}, {g}, ...] like token, got {list(a['past_k'].shape)} and {list(a['past_v'].shape)}")
        t = a["memory_mask"].shape[1]
        if a["cross_k"].shape[3] != t or a["cross_v"].shape != a["cross_k"].shape:
            raise ValueError(f"cross_k/cross_v must have {t} memory slots like memory_mask, got {list(a['cross_k'].shape)}")
        tok = a["token"]
        if tok.size and (tok.min() < 0 or tok.max() >= c["vocab_sizes"][level]):
            raise ValueError(f"token values must be in [0, {c['vocab_sizes'][level]}) at level {level}")
        return self.rt.shape_key(a), a

    def _run(self, key, arrays):
        outs = self.session.run(None, {k: np.ascontiguousarray(arrays[k]) for k in self.rt.STEP_INPUTS})
        return {name: torch.from_numpy(v) for name, v in zip(self.rt.STEP_OUTPUTS, outs)}

    def execute(self, requests):
        return self.rt.execute_batched(pb_utils, requests, self._read, self._run, "token")

    def finalize(self):
        self.session = None
