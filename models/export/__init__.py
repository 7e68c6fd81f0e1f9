"""Export of the generator for serving: ONNX graphs (encoder + one KV-cached decoder step) and a Triton
model repository (python-backend models that run those graphs with onnxruntime, plus trie-constrained beam
search), and the client metadata every version carries (version_client). Pure library: no tritonclient import
here (triton_repo talks to the server)."""

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
    SERVING_PARAM,
    SERVING_SHA_PARAM,
    ServingConfig,
    config_interface,
    list_versions,
    manifest_sha256,
    pinned_config,
    publish_version,
    read_manifest,
    remove_version,
    render_config,
    serving_identity_of,
    serving_version_of,
    write_model_repository,
)
from .version_client import VersionClient, VersionMismatchError

__all__ = [
    "ENCODER_INPUTS", "ENCODER_OUTPUTS", "STEP_INPUTS", "STEP_OUTPUTS", "DecoderStepExport", "EncoderExport",
    "ExportConfig", "example_batch", "export_decoder_step", "export_encoder", "export_onnx", "interface",
    "load_runtime", "make_session", "serving_arrays", "MODELS", "SERVING_PARAM", "SERVING_SHA_PARAM", "ServingConfig", "config_interface",
    "list_versions", "pinned_config", "publish_version", "read_manifest", "remove_version", "render_config",
    "serving_version_of", "serving_identity_of", "manifest_sha256", "write_model_repository", "VersionClient", "VersionMismatchError",
]
