"""A real `dagster dev` (webserver + daemon) on 127.0.0.1, a free port, a tiny config and a temp data dir."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from orchestration.settings import DEFAULT_CONFIG, PROJECT_ROOT

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV") or PROJECT_ROOT / ".venv") / "bin"
TINY_WORLD = dict(n_items=240, n_users=150, n_days=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterServer:
    def __init__(self, url: str, home: Path, data: Path, process: subprocess.Popen, log: Path):
        self.url, self.home, self.data, self.process, self.log = url, home, data, process, log

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=timeout)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def log_tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


@pytest.fixture(scope="session")
def dagster_server(tmp_path_factory) -> DagsterServer:
    base = tmp_path_factory.mktemp("ui")
    home, data = base / "dagster_home", base / "data"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["synthetic"].update(TINY_WORLD)
    raw["semantic_ids"].update(codebook_size=16, max_iter=20)
    config = base / "params.yaml"
    config.write_text(yaml.safe_dump(raw))

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OXYREC_", "DAGSTER_", "PYTEST_"))}
    env.update(OXYREC_CONFIG=str(config), OXYREC_HOME=str(data), DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    log = base / "dagster_dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = DagsterServer(f"http://127.0.0.1:{port}", home, data, process, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"dagster dev exited:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"dagster dev not ready after 180 s:\n{server.log_tail()}"
            try:
                entries = server.graphql(LOCATION_QUERY, timeout=10)["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    assert not errors, errors
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        yield server
    finally:
        # dagster dev runs in its own process group: stop the webserver, the daemon and the code server together.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
