"""Run a real ``tritonserver`` (CPU, python backend) on a model repository: start, load/unload, stop.

Recipe from ENVIRONMENT.md ("Triton with numpy 2"): explicit model control, ``--strict-readiness=false`` (one
failed load must not make the whole server unready), bound to 127.0.0.1 by default, PATH with the venv's
``bin`` first (the python backend stub finds the interpreter, numpy 2, torch and onnxruntime through
``python3`` on PATH), LD_LIBRARY_PATH = the running Python's LIBDIR (else the stub can pick Debian's
libpython and hang), its own process group (``start_new_session``), a log file, and a readiness deadline
that fails with the log tail. Model control (:class:`ModelControl`, also usable on its own against any
server URL) goes through plain urllib calls (no keep-alive connection that would hold shutdown until
--exit-timeout-secs); ``stop()`` sends SIGTERM to the group, waits, kills if needed.

    with TritonServer(repo) as server:          # http_port=0 / grpc_port=0 pick free ports
        server.load("oxygenrec_generate")
        ... server.http_url, server.grpc_url ...
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .install import ensure_tritonserver, tritonserver_binary

__all__ = ["ModelControl", "TritonServer", "TritonServerError", "free_port"]


class TritonServerError(RuntimeError):
    """tritonserver did not start, a model did not load, or the server did not stop."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ModelControl:
    """Triton's model-control and statistics API at ``http_url`` (host:port), one short urllib call each."""

    def __init__(self, http_url: str, load_timeout: float = 300.0) -> None:
        self._url = http_url
        self.load_timeout = load_timeout

    @property
    def http_url(self) -> str:
        return self._url

    def _require_running(self) -> None:
        pass

    def _diagnostics(self) -> str:
        return ""

    # ------------------------------------------------------------------ models
    def load(self, model: str) -> float:
        """Load (or reload, which picks up new versions) ``model``; returns the seconds taken. Raises
        TritonServerError with Triton's message (e.g. "version 2 is at UNAVAILABLE state: ...")."""
        self._require_running()
        t0 = time.perf_counter()
        status, body = self._post(f"/v2/repository/models/{model}/load", self.load_timeout)
        if status != 200:
            raise TritonServerError(f"loading {model!r} failed (HTTP {status}): {_error_text(body)}{self._diagnostics()}")
        return time.perf_counter() - t0

    def load_all(self, models) -> dict[str, float]:
        """Load several models concurrently (Triton loads them in parallel); {model: seconds}. Every load is
        awaited before the first error is raised."""
        models = list(models)
        with ThreadPoolExecutor(max_workers=max(1, len(models))) as pool:
            futures = [pool.submit(self.load, m) for m in models]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        return {m: f.result() for m, f in zip(models, futures)}

    def unload(self, model: str) -> None:
        self._require_running()
        status, body = self._post(f"/v2/repository/models/{model}/unload", 30.0)
        if status != 200:
            raise TritonServerError(f"unloading {model!r} failed (HTTP {status}): {_error_text(body)}")

    def model_ready(self, model: str, version: str | int = "") -> bool:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version != "" else "") + "/ready"
        return self._get(path) == 200

    def server_live(self) -> bool:
        return self._get("/v2/health/live") == 200

    def model_versions(self, model: str) -> dict[str, str]:
        """{version: state} from the repository index, e.g. {"1": "READY", "2": "UNAVAILABLE"}."""
        self._require_running()
        status, body = self._post("/v2/repository/index", 30.0)
        if status != 200:
            raise TritonServerError(f"repository index failed (HTTP {status}): {_error_text(body)}")
        return {e["version"]: e.get("state", "") for e in json.loads(body or b"[]")
                if e.get("name") == model and "version" in e}

    def statistics(self, model: str) -> dict:
        """Raw /v2/models/<model>/stats JSON (per version: inference_count, execution_count, inference_stats...)."""
        self._require_running()
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{model}/stats", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise TritonServerError(f"stats of {model!r} failed (HTTP {e.code}): {_error_text(e.read())}") from e

    def inference_stats(self, model: str) -> dict[str, dict[str, int]]:
        """Cumulative server-side counters of ``model`` (all versions summed): {"success"|"queue"|"compute_input"|
        "compute_infer"|"compute_output": {"count", "ns"}}, plus {"batching": {"inference_count",
        "execution_count"}} (fewer executions than inferences = requests were batched together)."""
        body = self.statistics(model)
        out: dict[str, dict[str, int]] = {"batching": {"inference_count": 0, "execution_count": 0}}
        for entry in body.get("model_stats", []):
            out["batching"]["inference_count"] += int(entry.get("inference_count", 0))
            out["batching"]["execution_count"] += int(entry.get("execution_count", 0))
            for key, val in entry.get("inference_stats", {}).items():
                acc = out.setdefault(key, {"count": 0, "ns": 0})
                acc["count"] += int(val.get("count", 0))
                acc["ns"] += int(val.get("ns", 0))
        return out

    # Plain urllib (one connection per call, closed at once): no keep-alive connection can hold shutdown.
    def _get(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def _post(self, path: str, timeout: float) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            raise TritonServerError(f"POST {path} to {self.http_url} failed: {e}{self._diagnostics()}") from e


class TritonServer(ModelControl):
    def __init__(
        self,
        repo: str | os.PathLike,
        http_port: int = 0,
        grpc_port: int = 0,
        host: str = "127.0.0.1",
        home: str | os.PathLike | None = None,
        log_path: str | os.PathLike | None = None,
        startup_timeout: float = 30.0,
        load_timeout: float = 180.0,
        exit_timeout_secs: int = 10,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise ValueError(f"model repository {self.repo} does not exist")
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        if self.grpc_port == self.http_port:
            raise ValueError(f"http_port and grpc_port must differ, both are {self.http_port}")
        self.home = Path(home) if home is not None else None
        self.load_timeout = load_timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="tritonserver-")) / "triton.log"
        self.startup_timeout, self.exit_timeout_secs = startup_timeout, exit_timeout_secs
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------------ urls
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    # ------------------------------------------------------------------ lifecycle
    def command(self) -> list[str]:
        home = self.home
        return [
            str(tritonserver_binary(home)),
            f"--model-repository={self.repo}",
            f"--backend-directory={home / 'backends'}",
            "--model-control-mode=explicit",
            "--strict-readiness=false",
            f"--exit-timeout-secs={self.exit_timeout_secs}",
            "--allow-metrics=false",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
        env["LD_LIBRARY_PATH"] = libdir
        return env

    def start(self) -> "TritonServer":
        if self.proc is not None:
            raise TritonServerError("server already started")
        if self.home is None:
            self.home = ensure_tritonserver()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.environment(), start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._cleanup()
                raise TritonServerError(f"tritonserver exited with code {code} while starting; log {self.log_path}:\n{self.log_tail()}")
            if self._get("/v2/health/ready") == 200:
                self.startup_seconds = time.perf_counter() - t0
                return self
            time.sleep(0.05)
        self.stop()
        raise TritonServerError(f"tritonserver not ready after {self.startup_timeout:.0f} s on {self.http_url}; "
                                f"log {self.log_path}:\n{self.log_tail()}")

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the process group, wait (exit timeout + 5 s), SIGKILL the group if still alive. Returns the
        server's exit code (None if it was not running). Close your own tritonclient clients first: open
        keep-alive connections hold shutdown until --exit-timeout-secs (this class itself keeps none)."""
        if self.proc is None:
            return None
        timeout = self.exit_timeout_secs + 5.0 if timeout is None else timeout
        code = self.proc.poll()
        if code is None:
            self._signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)  # the server and its stubs
                code = self.proc.wait(10)
        else:
            # the server died on its own: its python stubs (same process group, pgid = the dead leader's pid, which
            # cannot be reused as a group id while they live) would be orphaned
            self._signal(signal.SIGKILL)
        self._cleanup()
        return code

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # own session: pgid == pid, so this reaches the stubs too
        except ProcessLookupError:  # the whole group is gone already
            pass

    def _cleanup(self) -> None:
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> dict[str, float]:
        """Resident memory (MB) of tritonserver and of its python stubs (Linux /proc)."""
        if self.proc is None:
            return {"server": 0.0, "stubs": 0.0}
        return {"server": _rss_mb(self.proc.pid), "stubs": sum(_rss_mb(p) for p in self.stub_pids())}

    def _require_running(self) -> None:
        if not self.running():
            raise TritonServerError(f"tritonserver is not running; log {self.log_path}:\n{self.log_tail()}")

    def _diagnostics(self) -> str:
        return f"\nlog tail ({self.log_path}):\n{self.log_tail(20)}"

    # ------------------------------------------------------------------ diagnostics
    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stub_pids(self) -> list[int]:
        """Process ids of the python backend stubs (children of the server)."""
        if self.proc is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:  # field 4 of /proc/<pid>/stat: ppid
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def listening_addresses(self) -> list[tuple[str, int]]:
        """(ip, port) of every TCP socket the server process listens on (Linux /proc)."""
        if self.proc is None:
            return []
        inodes = set()
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        out = []
        for table, v6 in (("tcp", False), ("tcp6", True)):
            path = Path(f"/proc/{self.proc.pid}/net/{table}")
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                f = line.split()
                if f[3] != "0A" or f[9] not in inodes:  # 0A = LISTEN
                    continue
                ip_hex, port_hex = f[1].split(":")
                out.append((_ip(ip_hex, v6), int(port_hex, 16)))
        return sorted(out)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _ip(hex_addr: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_addr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    ip = socket.inet_ntop(socket.AF_INET6, words)
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip  # IPv4-mapped (gRPC's listener)


def _error_text(body: bytes) -> str:
    try:
        return json.loads(body).get("error", body.decode(errors="replace"))
    except ValueError:
        return body.decode(errors="replace")
