"""ONNX export of the OxygenREC generator: an encoder graph and ONE incremental decoder-step graph.

Both graphs are traced with ``torch.onnx.export(..., dynamo=False)`` from small wrapper modules that call the
generator's own layers (eval mode, no dropout). Layout is batch-first everywhere (B = users/encoder rows,
G = beams per user, NL = decoder layers, H = heads, d_h = d_model / H, T = memory slots, P = decoder
positions cached so far, V* = max(vocab_sizes)) so that Triton can batch every tensor along dim 0 and the
beams of a user never need their own copy of the encoder state:

Encoder graph ``encoder.onnx`` (the encoder plus the decoder's prefix positions, which depend on no code):

    inputs   scenario Long[B], profile Long[B, P_f], profile_mask Bool[B, P_f], instruction_emb Float[B, D_r],
             has_instruction Bool[B], short_sids Long[B, S, L+1], short_mask Bool[B, S],
             long_sids Long[B, M, L+1], long_mask Bool[B, M], instruction_age Float[B] (days, -1 = none; read
             only with GeneratorConfig.instruction_age, but every graph has it: one interface)
    outputs  memory Float[B, T, d], memory_mask Bool[B, T]           (= OxygenGenerator.encode)
             cross_k, cross_v Float[B, NL, H, T, d_h]               cross-attention K/V of every decoder layer
             past_k, past_v Float[B, 1, NL, H, n_prefix, d_h]        self-attention K/V of BOS/INS (one beam)
             logits Float[B, 1, V*]                                  level-0 logits (-inf beyond V_0)

Decoder step graph ``decoder_step.onnx`` (one new code per beam; the level is read from P):

    inputs   token Long[B, G]  (code c_l chosen at level l = P - n_prefix), past_k, past_v Float[B, G, NL, H, P, d_h],
             cross_k, cross_v Float[B, NL, H, T, d_h], memory_mask Bool[B, T]
    outputs  logits Float[B, G, V*]  (level l+1, -inf beyond V_{l+1}),
             present_k, present_v Float[B, G, NL, H, P+1, d_h]

One decoder: both wrappers only call the generator's own methods (``encode``, ``init_cache``,
``prefix_inputs``, ``code_inputs``, ``run_decoder``, ``level_logits``), so training, the PyTorch beam search and the
served graphs run the same code; the step graph reads its position (and so the level) from the cache length P.

Choices: cross K/V are computed ONCE per request in the encoder graph (not per step) and broadcast over the G
beams inside the step (grouped attention), so a 256-beam step never copies the encoder state 256 times.
The decoder prefix (BOS, INS) runs inside the encoder graph, so the step graph always processes exactly one
position and has no control flow; depth 0's logits therefore come from the encoder graph.

Input contract of the traced graphs (checked by :func:`serving_arrays`): P_f >= 1, S >= 1 and
M >= min(n_recent + igr_top_k, max_long) (the recent and IGR top-k sizes are constants of the graph); pad with masked entries.
:func:`serving_arrays` pads every user to the configured maxima, which also makes Triton batching easy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn as nn

from models.nn.config import GeneratorConfig
from models.nn.generator import OxygenGenerator
from models.nn.instruction_age import NO_AGE
from models.nn.layers import DecoderCache

__all__ = [
    "ExportConfig",
    "ENCODER_INPUTS",
    "ENCODER_OUTPUTS",
    "STEP_INPUTS",
    "STEP_OUTPUTS",
    "EncoderExport",
    "DecoderStepExport",
    "export_encoder",
    "export_decoder_step",
    "export_onnx",
    "example_batch",
    "serving_arrays",
    "make_session",
    "interface",
    "load_runtime",
    "RUNTIME_PATH",
]

ENCODER_INPUTS = ("scenario", "profile", "profile_mask", "instruction_emb", "has_instruction",
                  "short_sids", "short_mask", "long_sids", "long_mask", "instruction_age")
ENCODER_OUTPUTS = ("memory", "memory_mask", "cross_k", "cross_v", "past_k", "past_v", "logits")
STEP_INPUTS = ("token", "past_k", "past_v", "cross_k", "cross_v", "memory_mask")
STEP_OUTPUTS = ("logits", "present_k", "present_v")

# The serving runtime (ONNX sessions + beam search) ships inside every model version directory, so it lives
# with the Triton templates and imports only numpy/torch/onnxruntime.
RUNTIME_PATH = Path(__file__).resolve().parents[2] / "triton_repo" / "templates" / "common" / "oxygenrec_runtime.py"


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 17
    trace_batch: int = 2  # example sizes used for tracing (all axes but the constant ones are dynamic)
    trace_beams: int = 3


# ---------------------------------------------------------------------------------------------- wrappers
class EncoderExport(nn.Module):
    """Batch tensors -> memory, memory_mask, cross K/V, the decoder prefix's self K/V and level-0 logits, all from
    the generator's own methods (encode, init_cache, prefix_inputs, run_decoder, level_logits)."""

    def __init__(self, generator: OxygenGenerator) -> None:
        super().__init__()
        self.g = generator

    def forward(self, scenario, profile, profile_mask, instruction_emb, has_instruction,
                short_sids, short_mask, long_sids, long_mask, instruction_age):
        g = self.g
        batch = dict(scenario=scenario, profile=profile, profile_mask=profile_mask, instruction_emb=instruction_emb,
                     has_instruction=has_instruction, short_sids=short_sids, short_mask=short_mask,
                     long_sids=long_sids, long_mask=long_mask, instruction_age=instruction_age)
        memory, memory_mask = g.encode(batch)
        # keep inputs the model does not read in the graph (the exporter drops unused inputs) so every generator
        # has the same interface: the causal encoder reads no short-term list, and instruction_age is read only
        # with cfg.instruction_age. `anchor` is always True (also for NaN ages), so the mask does not change.
        anchors = []
        if g.cfg.history_encoder == "causal":
            anchors.append((short_sids[:, 0, 0] * 0 == 0) & (short_mask[:, 0] | ~short_mask[:, 0]))
        if not g.cfg.instruction_age:
            anchors.append(instruction_age.isnan() | ~instruction_age.isnan())
        if anchors:
            anchor = anchors[0] if len(anchors) == 1 else anchors[0] & anchors[1]
            memory_mask = torch.cat([memory_mask[:, :1] & anchor[:, None], memory_mask[:, 1:]], 1)
        cache = g.init_cache(memory, memory_mask)
        h, ks, vs, _ = g.run_decoder(g.prefix_inputs(cache.instruction), cache)
        level0 = torch.zeros(1, dtype=torch.long, device=h.device)
        logits = g.level_logits(h[:, -1], level0)[:, None]  # [B, 1, V*]
        return (memory, memory_mask, torch.stack(cache.cross_k, 1), torch.stack(cache.cross_v, 1),
                torch.stack(ks, 1)[:, None], torch.stack(vs, 1)[:, None], logits)


class DecoderStepExport(nn.Module):
    """One incremental decoder position for G beams per user (module docstring): the B x G beams become B * G
    decoder rows of the generator's own run_decoder (cross-attention grouped over the G rows of a user, so the
    encoder state is never copied per beam)."""

    def __init__(self, generator: OxygenGenerator) -> None:
        super().__init__()
        self.g = generator

    def forward(self, token, past_k, past_v, cross_k, cross_v, memory_mask):
        g = self.g
        layers = range(g.cfg.dec_layers)
        pos = torch._shape_as_tensor(past_k)[4].reshape(1)  # P = index of the new decoder position (traced)
        x = g.code_inputs(token.reshape(-1, 1), pos)  # [B * G, 1, d]
        past_k, past_v = past_k.flatten(0, 1), past_v.flatten(0, 1)  # [B * G, NL, H, P, d_h]
        cache = DecoderCache([cross_k[:, i] for i in layers], [cross_v[:, i] for i in layers],
                             memory_mask[:, None, None, :], None,
                             [past_k[:, i] for i in layers], [past_v[:, i] for i in layers])
        h, ks, vs, _ = g.run_decoder(x, cache)
        logits = g.level_logits(h[:, -1], pos - g.cfg.n_prefix + 1)  # the next level's
        beams = token.shape
        return (logits.unflatten(0, beams), torch.stack(ks, 1).unflatten(0, beams),
                torch.stack(vs, 1).unflatten(0, beams))


# ---------------------------------------------------------------------------------------------- inputs
def example_batch(cfg: GeneratorConfig, batch_size: int = 2, seed: int = 0, codes: np.ndarray | None = None) -> dict:
    """A random full-size batch (torch tensors, fixed shapes P_f / max_short / max_long) with mixed masks.
    ``codes`` (N, L+1): draw histories from these items (else uniform random codes)."""
    g = torch.Generator().manual_seed(seed)
    b = batch_size

    def sids(n: int) -> torch.Tensor:
        if codes is not None:
            c = torch.as_tensor(np.asarray(codes), dtype=torch.long)
            return c[torch.randint(0, len(c), (b, n), generator=g)]
        return torch.stack([torch.randint(0, v, (b, n), generator=g) for v in cfg.vocab_sizes], -1)

    def lengths(n: int) -> torch.Tensor:
        return torch.arange(n)[None] < torch.randint(0, n + 1, (b, 1), generator=g)

    profile = torch.randint(0, cfg.profile_vocab_size, (b, cfg.n_profile_fields), generator=g)
    profile = torch.where(lengths(cfg.n_profile_fields), profile, 0)
    return {
        "scenario": torch.randint(0, cfg.n_scenarios, (b,), generator=g),
        "profile": profile,
        "profile_mask": profile != 0,
        "instruction_emb": torch.randn(b, cfg.instruction_dim, generator=g),
        "has_instruction": torch.rand(b, generator=g) < 0.7,
        "short_sids": sids(cfg.max_short),
        "short_mask": lengths(cfg.max_short),
        "long_sids": sids(cfg.max_long),
        "long_mask": lengths(cfg.max_long),
        # ages from seconds to months (every bucket), a fifth without instruction age
        "instruction_age": torch.where(torch.rand(b, generator=g) < 0.2, NO_AGE,
                                       10 ** (torch.rand(b, generator=g) * 6 - 4)),
    }


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def serving_arrays(batch: dict, cfg: GeneratorConfig, pad: bool = True) -> dict[str, np.ndarray]:
    """The encoder's ten input arrays (numpy, exact dtypes) from a generator batch dict (torch or numpy).

    Fills the optional entries (profile_mask = profile != 0, has_instruction = True, no instruction -> zeros with
    has_instruction False, instruction_age = -1 (none), missing profile/histories -> no slots) and, with ``pad``, pads profile / short / long to
    n_profile_fields / max_short / max_long with masked entries (padding never changes the result: masked slots
    are excluded from attention and from IGR). Raises ValueError on bad shapes.
    """
    if "scenario" not in batch:
        raise ValueError("batch needs 'scenario' (Long[B])")
    scenario = _np(batch["scenario"]).astype(np.int64)
    if scenario.ndim != 1:
        raise ValueError(f"batch['scenario'] must be Long[B], got shape {scenario.shape}")
    b, L1 = scenario.shape[0], cfg.n_levels
    out: dict[str, np.ndarray] = {"scenario": scenario}

    profile = _np(batch["profile"]).astype(np.int64) if batch.get("profile") is not None else np.zeros((b, 0), np.int64)
    if profile.ndim != 2 or profile.shape[0] != b or profile.shape[1] > cfg.n_profile_fields:
        raise ValueError(f"batch['profile'] must be [B={b}, P<={cfg.n_profile_fields}], got {profile.shape}")
    pmask = batch.get("profile_mask")
    pmask = profile != 0 if pmask is None else _np(pmask).astype(bool)
    if pmask.shape != profile.shape:
        raise ValueError(f"batch['profile_mask'] must have shape {profile.shape}, got {pmask.shape}")
    out["profile"], out["profile_mask"] = profile, pmask

    r = batch.get("instruction_emb")
    has = batch.get("has_instruction")
    if r is None:
        r, has = np.zeros((b, cfg.instruction_dim), np.float32), np.zeros(b, bool)
    r = _np(r).astype(np.float32)
    if r.shape != (b, cfg.instruction_dim):
        raise ValueError(f"batch['instruction_emb'] must be [{b}, {cfg.instruction_dim}], got {r.shape}")
    has = np.ones(b, bool) if has is None else _np(has).astype(bool)
    if has.shape != (b,):
        raise ValueError(f"batch['has_instruction'] must be Bool[{b}], got {has.shape}")
    out["instruction_emb"], out["has_instruction"] = r, has
    age = batch.get("instruction_age")
    age = np.full(b, NO_AGE, np.float32) if age is None else _np(age).astype(np.float32)
    if age.shape != (b,):
        raise ValueError(f"batch['instruction_age'] must be Float[{b}], got {age.shape}")
    out["instruction_age"] = age

    for key, limit in (("short", cfg.max_short), ("long", cfg.max_long)):
        sids, mask = batch.get(f"{key}_sids"), batch.get(f"{key}_mask")
        if sids is None:
            sids, mask = np.zeros((b, 0, L1), np.int64), np.zeros((b, 0), bool)
        sids = _np(sids).astype(np.int64)
        if mask is None:
            raise ValueError(f"batch has '{key}_sids' but no '{key}_mask'")
        mask = _np(mask).astype(bool)
        if sids.ndim != 3 or sids.shape[0] != b or sids.shape[2] != L1 or sids.shape[1] > limit:
            raise ValueError(f"batch['{key}_sids'] must be [B={b}, n<={limit}, {L1}], got {sids.shape}")
        if mask.shape != sids.shape[:2]:
            raise ValueError(f"batch['{key}_mask'] must have shape {sids.shape[:2]}, got {mask.shape}")
        out[f"{key}_sids"], out[f"{key}_mask"] = np.where(mask[..., None], sids, 0), mask

    if pad:
        for key, n in (("profile", cfg.n_profile_fields), ("short_sids", cfg.max_short), ("long_sids", cfg.max_long)):
            mkey = "profile_mask" if key == "profile" else key.replace("_sids", "_mask")
            extra = n - out[key].shape[1]
            if extra > 0:
                widths = [(0, 0), (0, extra)] + [(0, 0)] * (out[key].ndim - 2)
                out[key] = np.pad(out[key], widths)
                out[mkey] = np.pad(out[mkey], [(0, 0), (0, extra)])
    min_long = cfg.min_long
    for key, low in (("profile", 1), ("short_sids", 1), ("long_sids", min_long)):
        if out[key].shape[1] < low:
            raise ValueError(f"the exported encoder needs {key!r} with at least {low} slots (pad with masked "
                             f"entries or use pad=True), got {out[key].shape[1]}")
    return {k: np.ascontiguousarray(out[k]) for k in ENCODER_INPUTS}


# ---------------------------------------------------------------------------------------------- export
def _quiet_export(module: nn.Module, args: tuple, path: Path, inputs, outputs, axes: dict, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings from the generator's input checks (not part of the graph)
        buf = io.BytesIO()
        torch.onnx.export(module, args, buf, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def _eval_mode(generator: OxygenGenerator):
    """Trace in eval mode (no dropout) and restore the caller's training flag afterwards."""

    class _Guard:
        def __enter__(self):
            self.was = generator.training
            generator.eval()

        def __exit__(self, *exc):
            generator.train(self.was)

    return _Guard()


def export_encoder(generator: OxygenGenerator, path: str | Path, config: ExportConfig = ExportConfig()) -> Path:
    path = Path(path)
    cfg = generator.cfg
    arrays = serving_arrays(example_batch(cfg, config.trace_batch, seed=0), cfg)
    args = tuple(torch.from_numpy(arrays[k]) for k in ENCODER_INPUTS)
    axes = {"scenario": {0: "B"}, "profile": {0: "B", 1: "P_f"}, "profile_mask": {0: "B", 1: "P_f"},
            "instruction_emb": {0: "B"}, "has_instruction": {0: "B"},
            "short_sids": {0: "B", 1: "S"}, "short_mask": {0: "B", 1: "S"},
            "long_sids": {0: "B", 1: "M"}, "long_mask": {0: "B", 1: "M"}, "instruction_age": {0: "B"},
            "memory": {0: "B", 1: "T"}, "memory_mask": {0: "B", 1: "T"},
            "cross_k": {0: "B", 3: "T"}, "cross_v": {0: "B", 3: "T"},
            "past_k": {0: "B"}, "past_v": {0: "B"}, "logits": {0: "B"}}
    with _eval_mode(generator):
        _quiet_export(EncoderExport(generator).eval(), args, path, ENCODER_INPUTS, ENCODER_OUTPUTS, axes, config.opset)
    return path


def export_decoder_step(generator: OxygenGenerator, path: str | Path, config: ExportConfig = ExportConfig()) -> Path:
    path = Path(path)
    cfg = generator.cfg
    b, gb, t = config.trace_batch, config.trace_beams, 5
    nl, h, dh = cfg.dec_layers, cfg.n_heads, cfg.d_model // cfg.n_heads
    p = cfg.n_prefix + 1  # trace at level 1 (any level works: the level is computed from P in the graph)
    gen = torch.Generator().manual_seed(0)
    args = (torch.zeros(b, gb, dtype=torch.long), torch.randn(b, gb, nl, h, p, dh, generator=gen),
            torch.randn(b, gb, nl, h, p, dh, generator=gen), torch.randn(b, nl, h, t, dh, generator=gen),
            torch.randn(b, nl, h, t, dh, generator=gen), torch.ones(b, t, dtype=torch.bool))
    axes = {"token": {0: "B", 1: "G"}, "past_k": {0: "B", 1: "G", 4: "P"}, "past_v": {0: "B", 1: "G", 4: "P"},
            "cross_k": {0: "B", 3: "T"}, "cross_v": {0: "B", 3: "T"}, "memory_mask": {0: "B", 1: "T"},
            "logits": {0: "B", 1: "G"}, "present_k": {0: "B", 1: "G", 4: "P1"}, "present_v": {0: "B", 1: "G", 4: "P1"}}
    with _eval_mode(generator):
        _quiet_export(DecoderStepExport(generator).eval(), args, path, STEP_INPUTS, STEP_OUTPUTS, axes, config.opset)
    return path


def interface(cfg: GeneratorConfig) -> dict:
    """Shapes/dtypes of both graphs (symbolic dims as strings) plus the constants the runtime needs."""
    L1, nl, h, dh, d = cfg.n_levels, cfg.dec_layers, cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.d_model
    vmax, n = max(cfg.vocab_sizes), cfg.n_prefix
    return {
        "encoder": {
            "inputs": {"scenario": ["int64", ["B"]], "profile": ["int64", ["B", "P_f"]],
                       "profile_mask": ["bool", ["B", "P_f"]], "instruction_emb": ["float32", ["B", cfg.instruction_dim]],
                       "has_instruction": ["bool", ["B"]], "short_sids": ["int64", ["B", "S", L1]],
                       "short_mask": ["bool", ["B", "S"]], "long_sids": ["int64", ["B", "M", L1]],
                       "long_mask": ["bool", ["B", "M"]], "instruction_age": ["float32", ["B"]]},
            "outputs": {"memory": ["float32", ["B", "T", d]], "memory_mask": ["bool", ["B", "T"]],
                        "cross_k": ["float32", ["B", nl, h, "T", dh]], "cross_v": ["float32", ["B", nl, h, "T", dh]],
                        "past_k": ["float32", ["B", 1, nl, h, n, dh]], "past_v": ["float32", ["B", 1, nl, h, n, dh]],
                        "logits": ["float32", ["B", 1, vmax]]},
        },
        "decoder_step": {
            "inputs": {"token": ["int64", ["B", "G"]], "past_k": ["float32", ["B", "G", nl, h, "P", dh]],
                       "past_v": ["float32", ["B", "G", nl, h, "P", dh]], "cross_k": ["float32", ["B", nl, h, "T", dh]],
                       "cross_v": ["float32", ["B", nl, h, "T", dh]], "memory_mask": ["bool", ["B", "T"]]},
            "outputs": {"logits": ["float32", ["B", "G", vmax]],
                        "present_k": ["float32", ["B", "G", nl, h, "P+1", dh]],
                        "present_v": ["float32", ["B", "G", nl, h, "P+1", dh]]},
        },
        "constants": {"vocab_sizes": list(cfg.vocab_sizes), "n_levels": L1, "n_prefix": n, "dec_layers": nl,
                      "n_heads": h, "d_head": dh, "d_model": d, "max_vocab": vmax,
                      "instruction_dim": cfg.instruction_dim, "n_scenarios": cfg.n_scenarios,
                      "profile_vocab_size": cfg.profile_vocab_size, "n_profile_fields": cfg.n_profile_fields,
                      "max_short": cfg.max_short, "max_long": cfg.max_long,
                      "min_long": cfg.min_long},
    }


def export_onnx(generator: OxygenGenerator, out_dir: str | Path, config: ExportConfig = ExportConfig()) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder_step.onnx`` and ``interface.json`` into ``out_dir``."""
    if generator.cfg.history_bias:
        raise ValueError("GeneratorConfig.history_bias is not exported yet: the serving runtime's beam search does not "
                         "apply the repeat bias, so served and evaluated rankings would differ")
    out_dir = Path(out_dir)
    paths = {"encoder": export_encoder(generator, out_dir / "encoder.onnx", config),
             "decoder_step": export_decoder_step(generator, out_dir / "decoder_step.onnx", config)}
    paths["interface"] = out_dir / "interface.json"
    paths["interface"].write_text(json.dumps(interface(generator.cfg), indent=2))
    return paths


# ---------------------------------------------------------------------------------------------- runtime
def make_session(path: str | Path, threads: int = 1):
    """onnxruntime CPU session with ``threads`` intra- and inter-op threads (1 on shared 2-core machines)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def load_runtime() -> ModuleType:
    """Import the serving runtime shipped with the Triton templates (ONNX sessions + beam search)."""
    name = "oxygenrec_runtime_" + hashlib.sha1(str(RUNTIME_PATH).encode()).hexdigest()[:8]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RUNTIME_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the serving runtime from {RUNTIME_PATH}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
