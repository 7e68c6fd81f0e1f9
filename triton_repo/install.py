"""Install a CPU ``tritonserver`` binary from PyPI without touching the venv's packages.

``nvidia-pytriton==0.7.0`` bundles a real ``tritonserver`` (2.51.0) with the python backend only, but pins
numpy<2. So the wheel is only *downloaded* (``pip download --no-deps``) and two trees are unzipped from it,
keeping the wheel layout because the binary's RPATH points at ``../../nvidia_pytriton.libs``:

    <dest>/wheels/nvidia_pytriton-0.7.0-*.whl          pip download cache
    <dest>/pytriton/tritonserver/{bin,backends,lib,...}
    <dest>/nvidia_pytriton.libs/*

and the Python 3.11 backend stub is copied to ``backends/python/triton_python_backend_stub`` (ENVIRONMENT.md,
"Triton Inference Server on CPU, from PyPI"). The venv stays ``pip check`` clean. Idempotent: a complete
install (marker file) is returned as is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from models.artifacts import atomic_write_text

__all__ = ["PYTRITON_VERSION", "TritonInstallError", "default_dest", "ensure_tritonserver", "tritonserver_binary"]

PYTRITON_VERSION = "0.7.0"
_MARKER = ".oxyrec-installed"
_ROOT = Path(__file__).resolve().parents[1]


def default_dest() -> Path:
    """``<venv>/triton`` of the running interpreter's venv (every clone using the venv shares one download);
    ``<project>/.venv/triton`` when Python runs outside a venv."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "triton"
    return _ROOT / ".venv" / "triton"


class TritonInstallError(RuntimeError):
    """The tritonserver binary could not be fetched or unpacked."""


def tritonserver_binary(home: Path) -> Path:
    """``<home>/bin/tritonserver`` for a tritonserver home returned by :func:`ensure_tritonserver`."""
    return Path(home) / "bin" / "tritonserver"


def _download(wheels: Path) -> Path:
    found = sorted(wheels.glob(f"nvidia_pytriton-{PYTRITON_VERSION}-*.whl"))
    if found:
        return found[-1]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary=:all:", f"nvidia-pytriton=={PYTRITON_VERSION}", "-d", str(wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(f"nvidia_pytriton-{PYTRITON_VERSION}-*.whl"))
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise TritonInstallError(
            f"could not download nvidia-pytriton=={PYTRITON_VERSION} from PyPI (needed for the tritonserver "
            f"binary) with `{' '.join(cmd)}` (exit {proc.returncode}):\n{tail}"
        )
    return found[-1]


def ensure_tritonserver(dest: str | os.PathLike | None = None) -> Path:
    """Return the tritonserver home (``.../pytriton/tritonserver``), downloading and unpacking it once into
    ``dest`` (default :func:`default_dest`)."""
    dest = Path(dest if dest is not None else default_dest()).resolve()
    home = dest / "pytriton" / "tritonserver"
    if (dest / _MARKER).exists() and tritonserver_binary(home).exists():
        return home
    wheel = _download(dest / "wheels")
    staging = dest / ".unpack"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.infolist()
                       if m.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
            if not members:
                raise TritonInstallError(f"{wheel} holds no pytriton/tritonserver/ tree")
            for m in members:
                zf.extract(m, staging)
                mode = (m.external_attr >> 16) & 0o777
                if mode:  # zipfile drops the executable bits
                    os.chmod(staging / m.filename, mode)
    except zipfile.BadZipFile as exc:
        wheel.unlink(missing_ok=True)  # a truncated download is retried next time
        raise TritonInstallError(f"{wheel} is not a valid wheel ({exc}); deleted it, run again") from exc
    t = staging / "pytriton" / "tritonserver"
    stub = t / "python_backend_stubs" / "3.11" / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonInstallError(f"the wheel has no Python 3.11 backend stub at {stub.relative_to(staging)}")
    (t / "backends" / "python").mkdir(parents=True, exist_ok=True)
    shutil.copy2(stub, t / "backends" / "python" / "triton_python_backend_stub")
    for p in (tritonserver_binary(t), t / "backends" / "python" / "triton_python_backend_stub"):
        p.chmod(p.stat().st_mode | 0o755)
    for sub in ("pytriton", "nvidia_pytriton.libs"):  # swap in the finished trees
        shutil.rmtree(dest / sub, ignore_errors=True)
        os.replace(staging / sub, dest / sub)
    shutil.rmtree(staging, ignore_errors=True)
    atomic_write_text(dest / _MARKER, f"nvidia-pytriton=={PYTRITON_VERSION}\n{wheel.name}\n")
    return home


if __name__ == "__main__":
    print(ensure_tritonserver(*sys.argv[1:2]))
