"""Triton model repository: render the templates in ``triton_repo/templates`` and publish versions atomically.

Layout written by :func:`write_model_repository` (standard Triton layout, so a GPU Triton loads it unchanged):

    <repo>/oxygenrec_encoder/config.pbtxt
    <repo>/oxygenrec_encoder/<v>/{model.py, model.onnx, oxygenrec_runtime.py, manifest.json}
    <repo>/oxygenrec_decoder_step/config.pbtxt
    <repo>/oxygenrec_decoder_step/<v>/{model.py, model.onnx, oxygenrec_runtime.py, manifest.json}
    <repo>/oxygenrec_generate/config.pbtxt
    <repo>/oxygenrec_generate/<v>/{model.py, encoder.onnx, decoder_step.onnx, trie.npz, items.json,
                                   sid_trie.py, oxygenrec_runtime.py, manifest.json[, client.json, sid_codes.npy]}

Every version directory is self-contained (numpy/torch/onnxruntime only): ``sid_trie.py`` is a verbatim copy
of models/semantic_ids/trie.py and ``oxygenrec_runtime.py`` of triton_repo/templates/common. ``manifest.json``
records each file's size and sha256 (checked by the model at load time, so a corrupt file fails the load with
a clear message), the generator config, the tensor interface and the serving config. Given the example encoder,
the generate version also carries ``client.json`` + ``sid_codes.npy`` (models/export/version_client.py): the
encoder vocabularies, SID table and its hash a client needs to build this version's inputs.

Every file is written through ``models.artifacts`` (temp file + fsync + rename) and a finished version directory
is fsynced before its rename into place.

Publishing: :func:`publish_version` copies a staged version directory next to the live versions under a
temporary non-numeric name (Triton ignores it) and ``os.rename``s it to ``<N+1>`` (or a given number), so Triton
never sees a half-written version; :func:`remove_version` renames a version away before deleting it (rollback).
Never rewrite a live version in place: publish a new number (ENVIRONMENT.md, "Versions at run time").
:func:`pinned_config` renders a model's config.pbtxt pinned to given versions (``version_policy: specific``) and
records the version clients must address in the ``SERVING_VERSION`` parameter (triton_repo/deploy.py).
"""

from __future__ import annotations

import os
import re
import shutil
import string
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.artifacts import atomic_write, atomic_write_json, atomic_write_text, fsync_dir, fsync_tree
from models.nn.generator import OxygenGenerator
from models.semantic_ids.trie import SIDTrie

from .onnx_export import RUNTIME_PATH, ExportConfig, export_onnx, interface
from .version_client import write_client_files

__all__ = [
    "MODELS",
    "ServingConfig",
    "write_model_repository",
    "render_config",
    "publish_version",
    "remove_version",
    "list_versions",
    "read_manifest",
    "pinned_config",
    "config_interface",
    "serving_version_of",
    "serving_identity_of",
    "manifest_sha256",
    "SERVING_PARAM",
    "SERVING_SHA_PARAM",
    "TEMPLATES_DIR",
]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = ROOT / "triton_repo" / "templates"
TRIE_SOURCE = ROOT / "models" / "semantic_ids" / "trie.py"
MODELS = ("oxygenrec_encoder", "oxygenrec_decoder_step", "oxygenrec_generate")
SERVING_PARAM = "SERVING_VERSION"  # config.pbtxt parameter: the version clients address (set by the deployment)
SERVING_SHA_PARAM = "SERVING_MANIFEST_SHA256"  # ... and the sha256 of that version's manifest.json (its identity)
_POLICY = re.compile(r"^(latest(:\d+)?|all|specific:\d+(,\d+)*)$")


@dataclass(frozen=True)
class ServingConfig:
    """Triton settings rendered into every config.pbtxt.

    version_policy: "latest:N" (serve the N highest versions; default 1), "all", or "specific:1,3".
    """

    max_batch_size: int = 8  # users per batched execution (Triton dynamic batching)
    max_queue_delay_us: int = 200
    instance_count: int = 1  # model instances (each its own stub process) per model
    version_policy: str = "latest:1"
    ort_threads: int = 1  # onnxruntime intra/inter-op threads per instance
    torch_threads: int = 1
    max_beam_width: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "instance_count", "ort_threads", "torch_threads", "max_beam_width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ServingConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"ServingConfig.max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if not _POLICY.match(self.version_policy):
            raise ValueError(f"ServingConfig.version_policy must be 'latest:N', 'all' or 'specific:V1,V2', "
                             f"got {self.version_policy!r}")

    def version_policy_pbtxt(self) -> str:
        p = self.version_policy
        if p == "all":
            return "{ all { } }"
        if p.startswith("specific:"):
            return "{ specific { versions: [ " + ", ".join(p.split(":", 1)[1].split(",")) + " ] } }"
        n = int(p.split(":", 1)[1]) if ":" in p else 1
        return f"{{ latest {{ num_versions: {n} }} }}"


def render_config(model: str, constants: dict, config: ServingConfig) -> str:
    """config.pbtxt text of ``model`` from its template (``${name}`` placeholders, all required)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    tmpl = string.Template((TEMPLATES_DIR / model / "config.pbtxt.tmpl").read_text())
    values = {**constants, **asdict(config), "version_policy": config.version_policy_pbtxt()}
    try:
        return tmpl.substitute(values)
    except KeyError as exc:
        raise ValueError(f"template {model}/config.pbtxt.tmpl needs a value for {exc}") from exc


_NAME_LINE = re.compile(r'^name:\s*".*"\s*$', re.M)
_POLICY_LINE = re.compile(r"^version_policy:.*$", re.M)
_SERVING_LINE = re.compile(r'^parameters:\s*\{\s*key:\s*"(' + SERVING_PARAM + "|" + SERVING_SHA_PARAM
                           + r')".*$\n?', re.M)


def manifest_sha256(version_dir: str | os.PathLike) -> str:
    """sha256 of a version's manifest.json, which lists every file's sha256: the identity of its contents."""
    return _runtime().sha256_file(Path(version_dir) / _runtime().MANIFEST)


def config_interface(text: str) -> str:
    """config.pbtxt without the lines a deployment changes (name, version policy, SERVING_VERSION): two configs
    with the same interface text can serve each other's versions."""
    return _SERVING_LINE.sub("", _POLICY_LINE.sub("", _NAME_LINE.sub("", text))).strip()


def pinned_config(text: str, name: str, versions, serving: int, serving_sha256: str | None = None) -> str:
    """``text`` (a rendered config.pbtxt) for model ``name``, loading exactly ``versions``
    (``version_policy: { specific { versions: [...] } }``) and telling clients to address ``serving``, whose
    manifest.json hashes to ``serving_sha256`` (a client checks its copy of the version against it)."""
    versions = sorted({_check_version(v) for v in versions})
    if _check_version(serving) not in versions:
        raise ValueError(f"serving version {serving} is not among the loaded versions {versions}")
    if not _NAME_LINE.search(text) or not _POLICY_LINE.search(text):
        raise ValueError("config.pbtxt needs a name line and a version_policy line")
    out = _NAME_LINE.sub(f'name: "{name}"', text, count=1)
    policy = "{ specific { versions: [ " + ", ".join(map(str, versions)) + " ] } }"
    out = _POLICY_LINE.sub(lambda _: f"version_policy: {policy}", out, count=1)
    out = _SERVING_LINE.sub("", out).rstrip("\n")
    out += f'\nparameters: {{ key: "{SERVING_PARAM}" value: {{ string_value: "{serving}" }} }}\n'
    if serving_sha256:
        out += f'parameters: {{ key: "{SERVING_SHA_PARAM}" value: {{ string_value: "{serving_sha256}" }} }}\n'
    return out


def serving_version_of(config_text: str) -> int | None:
    """The SERVING_VERSION recorded in a config.pbtxt (None if it has none)."""
    m = re.search(r'key:\s*"' + SERVING_PARAM + r'"\s*value:\s*\{\s*string_value:\s*"(\d+)"', config_text)
    return int(m.group(1)) if m else None


def serving_identity_of(config_text: str) -> str | None:
    """The SERVING_MANIFEST_SHA256 recorded in a config.pbtxt (None if it has none)."""
    m = re.search(r'key:\s*"' + SERVING_SHA_PARAM + r'"\s*value:\s*\{\s*string_value:\s*"([0-9a-f]+)"', config_text)
    return m.group(1) if m else None


def _manifest(vdir: Path, extra: dict) -> None:
    from importlib import import_module

    rt = _runtime()
    files = {p.name: {"bytes": p.stat().st_size, "sha256": rt.sha256_file(p)}
             for p in sorted(vdir.iterdir()) if p.is_file() and p.name != rt.MANIFEST}
    versions = {}
    for mod in ("torch", "onnx", "onnxruntime", "numpy"):
        try:
            versions[mod] = import_module(mod).__version__
        except ImportError:  # pragma: no cover - onnx is a dependency of export
            versions[mod] = None
    payload = {**extra, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files,
               "library_versions": versions}
    atomic_write_json(vdir / rt.MANIFEST, payload, indent=2, sort_keys=True)


def _runtime():
    from .onnx_export import load_runtime

    return load_runtime()


def _check_version(version: int) -> int:
    if isinstance(version, bool) or int(version) != version or int(version) < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return int(version)


def write_model_repository(
    out_dir: str | os.PathLike,
    version: int,
    generator: OxygenGenerator,
    trie: SIDTrie,
    item_ids,
    config: ServingConfig = ServingConfig(),
    export_config: ExportConfig = ExportConfig(),
    encoder=None,
) -> dict[str, Path]:
    """Export ``generator`` and write version ``version`` of the three models under ``out_dir``.

    ``item_ids``: one id per catalog row of ``trie`` (str or int; row i = item index i). ``encoder``: the
    ``ExampleEncoder`` whose batches the generator reads; its metadata and SID table then travel with the
    version (client.json, sid_codes.npy), which clients need (triton_repo/recommend.py). Refuses to overwrite an
    existing version directory (publish a new number instead). Returns {model name: version directory}.
    """
    version = _check_version(version)
    out_dir = Path(out_dir)
    if tuple(trie.vocab_sizes) != tuple(generator.cfg.vocab_sizes):
        raise ValueError(f"trie vocab_sizes {trie.vocab_sizes} != generator vocab_sizes {generator.cfg.vocab_sizes}")
    ids = [str(i) for i in (item_ids.tolist() if isinstance(item_ids, np.ndarray) else list(item_ids))]
    if len(ids) != trie.num_items:
        raise ValueError(f"item_ids has {len(ids)} entries but the trie has {trie.num_items} items")
    if len(set(ids)) != len(ids):
        raise ValueError("item_ids has duplicates: every catalog row needs its own id")
    for model in MODELS:
        if (out_dir / model / str(version)).exists():
            raise ValueError(f"{out_dir / model / str(version)} already exists: publish a new version number")

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{uuid.uuid4().hex[:12]}"  # not a model name Triton would load
    try:
        paths = export_onnx(generator, staging / "onnx", export_config)
        iface = interface(generator.cfg)
        constants = iface["constants"]
        common = {"version": version, "generator_config": generator.cfg.to_dict(), "interface": iface,
                  "serving_config": asdict(config), "catalog": {"n_items": len(ids)}}
        files = {
            "oxygenrec_encoder": {"model.onnx": paths["encoder"]},
            "oxygenrec_decoder_step": {"model.onnx": paths["decoder_step"]},
            "oxygenrec_generate": {"encoder.onnx": paths["encoder"], "decoder_step.onnx": paths["decoder_step"],
                                   "sid_trie.py": TRIE_SOURCE},
        }
        out = {}
        for model in MODELS:
            vdir = staging / model
            vdir.mkdir(parents=True)
            shutil.copy2(TEMPLATES_DIR / "common" / "model.py", vdir / "model.py")  # one model.py for the three
            shutil.copy2(RUNTIME_PATH, vdir / "oxygenrec_runtime.py")
            for name, src in files[model].items():
                shutil.copy2(src, vdir / name)
            if model == "oxygenrec_generate":
                atomic_write(vdir / "trie.npz", lambda p: np.savez(p, **trie.to_arrays()))
                atomic_write_json(vdir / "items.json", ids)
                if encoder is not None:
                    write_client_files(vdir, encoder, generator.cfg, ids)
            _manifest(vdir, {"model": model, **common})
            model_dir = out_dir / model
            model_dir.mkdir(exist_ok=True)
            atomic_write_text(model_dir / "config.pbtxt", render_config(model, constants, config))
            fsync_tree(vdir)
            os.rename(vdir, model_dir / str(version))  # atomic: Triton never sees a partial version
            fsync_dir(model_dir)
            out[model] = model_dir / str(version)
        return out
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------------------ versions
def list_versions(repo_root: str | os.PathLike, model_name: str) -> list[int]:
    """Numeric version directories of a model, ascending."""
    d = Path(repo_root) / model_name
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def read_manifest(version_dir: str | os.PathLike) -> dict:
    """manifest.json of a version directory, with every file's checksum verified."""
    return _runtime().verify_version_dir(version_dir)


def publish_version(repo_root: str | os.PathLike, staged_dir: str | os.PathLike, model_name: str,
                    version: int | None = None) -> int:
    """Copy ``staged_dir`` (a version directory's contents) to ``<repo_root>/<model_name>/<N+1>`` atomically.

    The copy goes to a temporary non-numeric directory beside the versions, is fsynced, then ``os.rename``
    makes it version N+1 (N = highest existing version, 0 if none), or exactly ``version`` when given (an
    existing ``version`` is an error). ``config.pbtxt`` next to ``staged_dir`` is installed if the live model has
    none; if both exist they must describe the same interface (:func:`config_interface`: a new tensor interface
    needs an explicit config change, not a silent one). Returns the new version number.
    """
    repo_root, staged_dir = Path(repo_root), Path(staged_dir)
    if not (staged_dir / "model.py").is_file():
        raise ValueError(f"{staged_dir} is not a model version directory (no model.py)")
    model_dir = repo_root / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    staged_cfg, live_cfg = staged_dir.parent / "config.pbtxt", model_dir / "config.pbtxt"
    if staged_cfg.is_file():
        if not live_cfg.exists():
            atomic_write_text(live_cfg, staged_cfg.read_text())
        elif config_interface(staged_cfg.read_text()) != config_interface(live_cfg.read_text()):
            raise ValueError(f"{staged_cfg} differs from the live {live_cfg}: the new version changes the model's "
                             "config/interface; update config.pbtxt deliberately before publishing")
    elif not live_cfg.exists():
        raise ValueError(f"{model_dir} has no config.pbtxt and {staged_dir.parent} provides none")
    for p in model_dir.glob(".publish-*"):  # leftovers of an interrupted publish
        shutil.rmtree(p, ignore_errors=True)
    tmp = model_dir / f".publish-{uuid.uuid4().hex[:12]}"
    shutil.copytree(staged_dir, tmp, ignore=shutil.ignore_patterns("__pycache__"))
    fsync_tree(tmp)
    if version is not None:
        version = _check_version(version)
        if (model_dir / str(version)).exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(f"{model_dir / str(version)} already exists: never rewrite a published version")
        os.rename(tmp, model_dir / str(version))
        fsync_dir(model_dir)
        return version
    for _ in range(100):  # another publisher may take N+1 first: rename fails, try the next number
        version = max(list_versions(repo_root, model_name), default=0) + 1
        try:
            os.rename(tmp, model_dir / str(version))
            fsync_dir(model_dir)
            return version
        except OSError:
            if (model_dir / str(version)).exists():
                continue
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    raise RuntimeError(f"could not publish a new version of {model_name} in {repo_root}")


def remove_version(repo_root: str | os.PathLike, model_name: str, version: int) -> None:
    """Delete a version (rollback): renamed away first, so Triton never sees it half-deleted. Unload it (or
    load the model again so Triton picks the remaining versions) around this call."""
    version = _check_version(version)
    vdir = Path(repo_root) / model_name / str(version)
    if not vdir.is_dir():
        raise ValueError(f"{model_name} has no version {version} in {repo_root} (versions: "
                         f"{list_versions(repo_root, model_name)})")
    trash = vdir.with_name(f".removed-{version}-{uuid.uuid4().hex[:8]}")
    os.rename(vdir, trash)
    fsync_dir(vdir.parent)
    shutil.rmtree(trash, ignore_errors=True)
