"""OxygenREC serving runtime: ONNX sessions, input checks, beam search, Triton request batching, the three models.

Copied verbatim into every model version directory by ``models/export/repository.py`` (and imported from there
by the python-backend ``model.py`` files), so a published version needs nothing but numpy, torch and
onnxruntime: no project package, no files outside its own directory. Tests import the same file through
``models.export.onnx_export.load_runtime``, so what is tested is what is served.

Beam search (identical to models/decoding/beam_search.py::constrained_beam_search; B users, beam width W):

    encoder graph -> cross K/V, prefix self K/V, logits of level 0, one beam per user with s = 0
    for level d = 0..L:
        lp[b, k, v]   = log_softmax(logits[b, k, :V_d])[v]             (d > 0: decoder-step graph on the B x k beams)
        cand[b, k, v] = s[b, k] + lp[b, k, v] if the trie allows v after beam (b, k) else -inf
        (s, flat) = topk over (k, v) of cand[b]   (W' = min(W, k * V_d));  parent = flat // V_d, token = flat % V_d
        past K/V, trie nodes follow parent
    item = trie leaf of each beam (-1 with score -inf where fewer than top_k items are reachable)

The decoder-step graph runs in-process with onnxruntime (0.007 ms per call here) instead of through BLS to the
``oxygenrec_decoder_step`` model, which ENVIRONMENT.md measured at 0.2-0.4 ms of IPC per call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ENCODER_INPUTS = ("scenario", "profile", "profile_mask", "instruction_emb", "has_instruction",
                  "short_sids", "short_mask", "long_sids", "long_mask", "instruction_age")
# optional in config.pbtxt (clients of models that ignore it need not send it): absent -> this value per row
OPTIONAL_INPUTS = {"instruction_age": -1.0}  # = models/nn/instruction_age.py NO_AGE (no project imports here)
ENCODER_OUTPUTS = ("memory", "memory_mask", "cross_k", "cross_v", "past_k", "past_v", "logits")
STEP_INPUTS = ("token", "past_k", "past_v", "cross_k", "cross_v", "memory_mask")
STEP_OUTPUTS = ("logits", "present_k", "present_v")
MANIFEST = "manifest.json"


class ModelFilesError(RuntimeError):
    """A version directory is incomplete or its files do not match manifest.json."""


# ------------------------------------------------------------------------------------------ files
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_version_dir(version_dir: str | os.PathLike) -> dict:
    """Read ``manifest.json`` and check every listed file's size and sha256. Returns the manifest."""
    version_dir = Path(version_dir)
    mpath = version_dir / MANIFEST
    if not mpath.exists():
        raise ModelFilesError(f"{mpath} is missing: not a published OxygenREC model version")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as exc:
        raise ModelFilesError(f"{mpath} is not valid JSON: {exc}") from exc
    for name, meta in manifest.get("files", {}).items():
        p = version_dir / name
        if not p.exists():
            raise ModelFilesError(f"{p} is listed in {MANIFEST} but missing")
        if p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
            raise ModelFilesError(f"{p} does not match {MANIFEST} (size {p.stat().st_size} vs {meta['bytes']}, "
                                  "or sha256 differs): the file is corrupt or was changed after publishing")
    return manifest


def import_file(path: str | os.PathLike, name: str):
    """Import a python file from the version directory under a unique module name."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelFilesError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def make_session(path: str | os.PathLike, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ModelFilesError(f"onnxruntime cannot load {path}: {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------------------ inputs
def check_encoder_inputs(arrays: dict[str, np.ndarray], c: dict) -> int:
    """Validate the ten encoder arrays against the interface constants ``c``; returns B. Raises ValueError."""
    missing = [k for k in ENCODER_INPUTS if k not in arrays]
    if missing:
        raise ValueError(f"missing inputs {missing}")
    a = arrays
    L1 = c["n_levels"]
    if a["scenario"].ndim != 1:
        raise ValueError(f"scenario must be [B], got shape {list(a['scenario'].shape)}")
    b = a["scenario"].shape[0]
    shapes = {"profile": (b, None), "profile_mask": (b, None), "instruction_emb": (b, c["instruction_dim"]),
              "has_instruction": (b,), "short_sids": (b, None, L1), "short_mask": (b, None),
              "long_sids": (b, None, L1), "long_mask": (b, None), "instruction_age": (b,)}
    for k, want in shapes.items():
        got = a[k].shape
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise ValueError(f"{k} must have shape {[('?' if w is None else w) for w in want]}, got {list(got)}")
    for k in ("profile", "short", "long"):
        sk, mk = ("profile", "profile_mask") if k == "profile" else (f"{k}_sids", f"{k}_mask")
        if a[mk].shape != a[sk].shape[:2]:
            raise ValueError(f"{mk} shape {list(a[mk].shape)} does not match {sk} {list(a[sk].shape)}")
    limits = {"profile": (1, c["n_profile_fields"]), "short_sids": (1, c["max_short"]),
              "long_sids": (c["min_long"], c["max_long"])}
    for k, (lo, hi) in limits.items():
        n = a[k].shape[1]
        if not lo <= n <= hi:
            raise ValueError(f"{k} has {n} slots; the model takes {lo}..{hi} (pad with masked entries)")
    s = a["scenario"]
    if b and (s.min() < 0 or s.max() >= c["n_scenarios"]):
        raise ValueError(f"scenario values must be in [0, {c['n_scenarios']}), got {s[(s < 0) | (s >= c['n_scenarios'])][:4].tolist()}")
    p = np.where(a["profile_mask"], a["profile"], 0)
    if p.size and (p.min() < 0 or p.max() >= c["profile_vocab_size"]):
        raise ValueError(f"profile ids must be in [0, {c['profile_vocab_size']})")
    vocab = np.asarray(c["vocab_sizes"])
    for k in ("short", "long"):
        sids = np.where(a[f"{k}_mask"][..., None], a[f"{k}_sids"], 0)
        bad = (sids < 0) | (sids >= vocab)
        if bad.any():
            where = np.argwhere(bad)[0].tolist()
            raise ValueError(f"{k}_sids{where} = {int(sids[tuple(where)])} is outside the level's vocab {list(vocab)}")
    if not np.isfinite(a["instruction_emb"]).all():
        raise ValueError("instruction_emb has NaN or inf values")
    return b


# ------------------------------------------------------------------------------------------ model
class OnnxGenerator:
    """The exported encoder + decoder-step graphs behind a small torch-tensor API."""

    def __init__(self, encoder_path, step_path, constants: dict, threads: int = 1) -> None:
        self.c = constants
        self.vocab_sizes = tuple(int(v) for v in constants["vocab_sizes"])
        self.n_levels = len(self.vocab_sizes)
        self.encoder = make_session(encoder_path, threads)
        self.step_session = make_session(step_path, threads)

    def encode(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        feeds = {k: np.ascontiguousarray(arrays[k]) for k in ENCODER_INPUTS}
        return {k: torch.from_numpy(v) for k, v in zip(ENCODER_OUTPUTS, self.encoder.run(None, feeds))}

    def step(self, token, past_k, past_v, cross_k, cross_v, memory_mask):
        feeds = {"token": token, "past_k": past_k, "past_v": past_v, "cross_k": cross_k, "cross_v": cross_v,
                 "memory_mask": memory_mask}
        feeds = {k: np.ascontiguousarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in feeds.items()}
        return tuple(torch.from_numpy(v) for v in self.step_session.run(None, feeds))


@torch.no_grad()
def beam_search(gen: OnnxGenerator, trie, arrays: dict[str, np.ndarray], beam_width: int, top_k: int | None = None):
    """Top-k catalog items per user: (item_index Long[B, top_k], log_prob Float[B, top_k]), best first.
    ``trie`` is a SIDTrie (models/semantic_ids/trie.py, shipped as sid_trie.py): its ``beam_search`` is the one
    search of the project; this function only supplies the ONNX graphs' next-level logits."""
    if tuple(trie.vocab_sizes) != gen.vocab_sizes:
        raise ValueError(f"trie vocab_sizes {trie.vocab_sizes} != model vocab_sizes {gen.vocab_sizes}")
    enc = gen.encode(arrays)
    state = {"past_k": enc["past_k"], "past_v": enc["past_v"]}  # [B, k, NL, H, P, d_h]
    b = enc["logits"].shape[0]
    rows = torch.arange(b)[:, None]

    def next_logits(d: int, token, parent):
        if d == 0:
            return enc["logits"]  # [B, 1, V*]: the encoder graph already ran the first decoder position
        past_k, past_v = state["past_k"][rows, parent], state["past_v"][rows, parent]  # follow the chosen beams
        logits, state["past_k"], state["past_v"] = gen.step(token, past_k, past_v, enc["cross_k"], enc["cross_v"],
                                                            enc["memory_mask"])
        return logits

    return trie.beam_search(next_logits, b, beam_width, top_k)


def item_id_table(item_ids: list[str]) -> torch.Tensor:
    """UInt8[N + 1, W]: UTF-8 bytes of each id, zero padded; the last row (index -1) is all zeros."""
    raw = [str(i).encode("utf-8") for i in item_ids]
    width = max([1, *(len(r) for r in raw)])
    table = np.zeros((len(raw) + 1, width), np.uint8)
    for i, r in enumerate(raw):  # once at load time
        table[i, : len(r)] = np.frombuffer(r, np.uint8)
    return torch.from_numpy(table)


# ------------------------------------------------------------------------------------------ triton glue
def version_dir(args: dict) -> Path:
    """The model's own version directory (the only place a model loads files from)."""
    return Path(args["model_repository"]) / str(args["model_version"])


def parameter(model_config: dict, key: str, default: str) -> str:
    return model_config.get("parameters", {}).get(key, {}).get("string_value", default) or default


def read_request(pb_utils, request, names, optional=()) -> dict[str, np.ndarray]:
    """Input tensors as numpy arrays through DLPack (never ``as_numpy``: broken under numpy 2, ENVIRONMENT.md).
    Names in ``optional`` that the request does not carry are left out."""
    out = {}
    for name in names:
        t = pb_utils.get_input_tensor_by_name(request, name)
        if t is None:
            if name in optional:
                continue
            raise ValueError(f"missing input {name!r}")
        out[name] = torch.from_dlpack(t).numpy()
    return out


def execute_batched(pb_utils, requests, read, run, batch_input: str):
    """Serve a list of requests, running compatible ones (same key) as one batch.

    read(request) -> (key, arrays) raises ValueError for a bad request (only that request fails);
    run(key, arrays) -> dict name -> torch tensor (dim 0 = batch). Outputs are sent via ``Tensor.from_dlpack``.
    """
    responses = [None] * len(requests)
    groups: dict = {}
    for i, request in enumerate(requests):
        try:
            key, arrays = read(request)
        except Exception as exc:  # noqa: BLE001 -- becomes this request's error response
            responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
            continue
        groups.setdefault(key, []).append((i, arrays))
    for key, members in groups.items():
        try:
            if len(members) == 1:
                cat = members[0][1]
            else:
                cat = {k: np.concatenate([a[k] for _, a in members]) for k in members[0][1]}
            outs = run(key, cat)
            start = 0
            for i, arrays in members:
                n = arrays[batch_input].shape[0]
                tensors = [pb_utils.Tensor.from_dlpack(name, t[start : start + n].contiguous()) for name, t in outs.items()]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        except Exception as exc:  # noqa: BLE001
            for i, _ in members:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
    return responses


def shape_key(arrays: dict[str, np.ndarray]) -> tuple:
    return tuple((k, a.shape[1:]) for k, a in arrays.items())


# ------------------------------------------------------------------------------------------ the three models
class VersionModel:
    """What every python-backend model shares: its version directory (every file checked against the manifest),
    TORCH_THREADS / ORT_THREADS from config.pbtxt, the interface constants, and batched execution. Subclasses
    load their files in ``load`` and implement ``read`` (request -> (batch key, arrays)) and ``run``."""

    batch_input = "scenario"  # the input whose dim 0 counts a request's rows

    def __init__(self, args: dict, pb_utils) -> None:
        self.pb_utils = pb_utils
        self.vdir = Path(args["model_repository"]) / str(args["model_version"])
        self.tag = f"{self.vdir.parent.name}_{args['model_version']}"
        self.manifest = verify_version_dir(self.vdir)
        self.config = json.loads(args["model_config"])
        torch.set_num_threads(int(parameter(self.config, "TORCH_THREADS", "1")))
        self.threads = int(parameter(self.config, "ORT_THREADS", "1"))
        self.c = self.manifest["interface"]["constants"]
        self.load()

    def load(self) -> None:
        raise NotImplementedError

    def read(self, request):
        raise NotImplementedError

    def run(self, key, arrays) -> dict:
        raise NotImplementedError

    def execute(self, requests):
        return execute_batched(self.pb_utils, requests, self.read, self.run, self.batch_input)

    def read_encoder_inputs(self, request, extra=()) -> dict[str, np.ndarray]:
        a = read_request(self.pb_utils, request, ENCODER_INPUTS + tuple(extra), OPTIONAL_INPUTS)
        a["scenario"], a["has_instruction"] = a["scenario"].reshape(-1), a["has_instruction"].reshape(-1)
        for name, value in OPTIONAL_INPUTS.items():  # per-user scalars travel as [B, 1]
            a[name] = a[name].reshape(-1) if name in a else np.full(a["scenario"].shape[0], value, np.float32)
        return a


class EncoderModel(VersionModel):
    """oxygenrec_encoder: the exported encoder graph (model.onnx), one ONNX run per batch of requests."""

    def load(self) -> None:
        self.session = make_session(self.vdir / "model.onnx", self.threads)

    def read(self, request):
        a = self.read_encoder_inputs(request)
        check_encoder_inputs(a, self.c)
        return shape_key(a), a

    def run(self, key, arrays) -> dict:
        outs = self.session.run(None, {k: np.ascontiguousarray(arrays[k]) for k in ENCODER_INPUTS})
        return {name: torch.from_numpy(v) for name, v in zip(ENCODER_OUTPUTS, outs)}


class DecoderStepModel(VersionModel):
    """oxygenrec_decoder_step: one incremental decoder position (model.onnx) for G beams per user, for external
    callers that run their own decoding loop (a gateway, or a GPU deployment that wants the step as its own
    model). ``oxygenrec_generate`` runs the same graph in-process instead of through BLS (ENVIRONMENT.md measured
    0.2-0.4 ms of IPC per BLS call against 0.007 ms for the ONNX run itself)."""

    batch_input = "token"

    def load(self) -> None:
        self.session = make_session(self.vdir / "model.onnx", self.threads)

    def read(self, request):
        a = read_request(self.pb_utils, request, STEP_INPUTS)
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
        return shape_key(a), a

    def run(self, key, arrays) -> dict:
        outs = self.session.run(None, {k: np.ascontiguousarray(arrays[k]) for k in STEP_INPUTS})
        return {name: torch.from_numpy(v) for name, v in zip(STEP_OUTPUTS, outs)}


class GenerateModel(VersionModel):
    """oxygenrec_generate: trie-constrained beam search over the catalog, end to end in one model. Per batch of
    compatible requests (same shapes, beam_width and top_k): encoder.onnx once, then one decoder_step.onnx run
    per level in-process, trie masks from sid_trie.py + trie.npz, ids from items.json.

    Outputs per user: item_index Long[top_k] (catalog row, -1 = none), score Float[top_k] (log p(item)),
    item_id UInt8[top_k, W] (UTF-8 id, zero padded; all zeros for -1)."""

    def load(self) -> None:
        self.max_beam = int(parameter(self.config, "MAX_BEAM_WIDTH", "1024"))
        self.gen = OnnxGenerator(self.vdir / "encoder.onnx", self.vdir / "decoder_step.onnx", self.c, self.threads)
        sid_trie = import_file(self.vdir / "sid_trie.py", f"sid_trie_{self.tag}")
        with np.load(self.vdir / "trie.npz") as arrays:
            self.trie = sid_trie.SIDTrie.from_arrays(arrays)
        item_ids = json.loads((self.vdir / "items.json").read_text())
        if len(item_ids) != self.trie.num_items:
            raise ModelFilesError(f"items.json has {len(item_ids)} ids but the trie has {self.trie.num_items} items")
        self.ids = item_id_table(item_ids)  # [N + 1, W]; row -1 is the zero row for "no item"

    def read(self, request):
        a = self.read_encoder_inputs(request, ("beam_width", "top_k"))
        beam, top = a.pop("beam_width").reshape(-1), a.pop("top_k").reshape(-1)
        if beam.size == 0 or (beam != beam[0]).any() or (top != top[0]).any():
            raise ValueError("beam_width and top_k must be the same for every row of a request")
        w, k = int(beam[0]), int(top[0])
        if not 1 <= k <= w <= self.max_beam:
            raise ValueError(f"need 1 <= top_k <= beam_width <= {self.max_beam}, got top_k={k}, beam_width={w}")
        check_encoder_inputs(a, self.c)
        return (shape_key(a), w, k), a

    def run(self, key, arrays) -> dict:
        _, w, k = key
        items, scores = beam_search(self.gen, self.trie, arrays, w, k)
        return {"item_index": items, "score": scores, "item_id": self.ids[items]}


MODEL_CLASSES = {"oxygenrec_encoder": EncoderModel, "oxygenrec_decoder_step": DecoderStepModel,
                 "oxygenrec_generate": GenerateModel}


def load_model(args: dict, pb_utils) -> VersionModel:
    """The model the version directory's manifest names (what export wrote), initialised from Triton's args."""
    manifest = verify_version_dir(Path(args["model_repository"]) / str(args["model_version"]))
    name = manifest.get("model")
    if name not in MODEL_CLASSES:
        raise ModelFilesError(f"manifest names model {name!r}; this runtime serves {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[name](args, pb_utils)
