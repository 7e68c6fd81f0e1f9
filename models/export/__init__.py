"""Export of the generator for serving: ONNX graphs (encoder + one KV-cached decoder step) and a Triton
model repository (python-backend models that run those graphs with onnxruntime, plus trie-constrained beam
search). Pure library: no tritonclient import here (orchestration/serving talks to the server)."""

from .onnx_export import (
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    STEP_INPUTS,
    STEP_OUTPUTS,
    DecoderStepExport,
    EncoderExport,
    ExportConfig,
    example_batch,
    export_decoder_step,
    export_encoder,
    export_onnx,
    interface,
    load_runtime,
    make_session,
    serving_arrays,
)
from .repository import (
    MODELS,
    ServingConfig,
    list_versions,
    publish_version,
    read_manifest,
    remove_version,
    render_config,
    write_model_repository,
)

__all__ = [
    "ENCODER_INPUTS", "ENCODER_OUTPUTS", "STEP_INPUTS", "STEP_OUTPUTS", "DecoderStepExport", "EncoderExport",
    "ExportConfig", "example_batch", "export_decoder_step", "export_encoder", "export_onnx", "interface",
    "load_runtime", "make_session", "serving_arrays", "MODELS", "ServingConfig", "list_versions",
    "publish_version", "read_manifest", "remove_version", "render_config", "write_model_repository",
]
