"""The python-backend ``model.py`` of every OxygenREC Triton model (oxygenrec_encoder, oxygenrec_decoder_step,
oxygenrec_generate): it imports ``oxygenrec_runtime.py`` from its own version directory and serves the model
class that the version's manifest names (the runtime's MODEL_CLASSES). Every file comes from that directory and is
checked against manifest.json. Inputs are read with DLPack and outputs sent with ``Tensor.from_dlpack``
(``as_numpy`` / ``Tensor(name, ndarray)`` are broken under numpy 2, see triton_repo/README.md).
"""

import importlib.util
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        name = f"oxygenrec_runtime_{version_dir.parent.name}_{args['model_version']}"  # one module per version
        spec = importlib.util.spec_from_file_location(name, version_dir / "oxygenrec_runtime.py")
        runtime = importlib.util.module_from_spec(spec)
        sys.modules[name] = runtime
        spec.loader.exec_module(runtime)
        self.model = runtime.load_model(args, pb_utils)

    def execute(self, requests):
        return self.model.execute(requests)

    def finalize(self):
        self.model = None
