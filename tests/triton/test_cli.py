"""The ``oxyrec`` CLI (triton_repo/cli.py) against a REAL tritonserver and a real Feast store: documented exit codes
(0 ok, 1 runtime error in one line, 2 usage), help for every option, OXYREC_TRITON_URL, --json, and ``oxyrec
serve`` exiting non-zero when its tritonserver dies (0 on SIGTERM)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.settings import current_settings
from triton_repo import ModelControl, TritonServer, free_port
from triton_repo.cli import build_parser, main
from triton_repo.deploy import deploy

from .conftest import in_process, stage

ROOT = Path(__file__).resolve().parents[2]
GEN = "oxygenrec_generate"


@pytest.fixture(scope="module")
def served_world(world, triton_home, tmp_path_factory):
    """The world's data directory with version 1 deployed into <data>/triton_repository, and its server."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("cli")
    repo = world.root / "triton_repository"
    repo.mkdir(exist_ok=True)
    v1 = stage(world, tmp / "s1", seed=1)
    server = TritonServer(repo, home=triton_home, log_path=tmp / "triton.log").start()
    try:
        rows = world.online_rows(world.active_users("cart", 2), "cart")
        arrays = v1.client.inputs(rows)
        deploy(ModelControl(server.http_url), server.http_url, repo, v1.root, arrays, in_process(v1, arrays), 20, 10,
               models=(GEN,))
        yield world, server, v1
    finally:
        server.stop()
        torch.set_num_threads(threads)


@pytest.fixture
def env(monkeypatch):
    """Set environment variables for an in-process main() (settings are cached per process)."""
    def set_env(**values):
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        current_settings.cache_clear()

    yield set_env
    current_settings.cache_clear()


def expected_ids(world, v1, user: str, scenario: str, k: int) -> list[str]:
    rows = world.online_rows([user], scenario)
    return [str(world.sid_table.item_ids[i]) for i in in_process(v1, v1.client.inputs(rows), 20, k)[0]]


def test_every_option_has_help_and_usage_errors_exit_2(capsys):
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"oxyrec {name} {action.option_strings} has no help text"
    help_text = parser.format_help()
    assert "exit codes" in help_text and "OXYREC_TRITON_URL" in help_text
    for argv, message in ((["recommend", "--user", "u1", "--scenario", "cart", "--k", "0"], "--k: must be a positive"),
                          (["recommend", "--user", "u1", "--scenario", "cart", "--k", "ten"], "--k: must be a positive"),
                          (["recommend", "--user", "u1", "--scenario", "cart", "--k", "5000"], "--k must be <= 1024"),
                          (["recommend", "--scenario", "cart"], "the following arguments are required: --user"),
                          (["serve", "--http-port", "70000"], "must be a TCP port"),
                          (["fly"], "invalid choice")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        assert message in capsys.readouterr().err


def test_recommend_json_from_the_url_in_oxyrec_triton_url(served_world):
    """As a user runs it: a separate process, only the environment says where the data and the server are."""
    world, server, v1 = served_world
    user = world.active_users("cart", 1)[0]
    proc = subprocess.run(
        [sys.executable, "-m", "triton_repo.cli", "recommend", "--user", user, "--scenario", "cart", "--k", "5",
         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OXYREC_HOME": str(world.root), "OXYREC_TRITON_URL": server.http_url})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["url"] == server.http_url and out["version"] == 1 and out["known_user"] is True
    assert [i["item_id"] for i in out["items"]] == expected_ids(world, v1, user, "cart", 5)
    assert [i["rank"] for i in out["items"]] == [1, 2, 3, 4, 5] and out["instruction"]


def test_recommend_table_and_unknown_scenario(served_world, env, capsys):
    world, server, v1 = served_world
    env(OXYREC_HOME=str(world.root), OXYREC_TRITON_URL=server.http_url)
    user = world.active_users("search", 1)[0]
    assert main(["recommend", "--user", user, "--scenario", "search", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert f"served by {server.http_url} version 1" in out
    assert all(i in out for i in expected_ids(world, v1, user, "search", 3))
    with pytest.raises(SystemExit) as exit_:
        main(["recommend", "--user", user, "--scenario", "moon"])
    assert exit_.value.code == 2
    assert "unknown scenario 'moon'; the served version knows ['cart'" in capsys.readouterr().err


def test_runtime_errors_exit_1_with_one_line(served_world, env, capsys, tmp_path):
    world, server, _ = served_world
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    env(OXYREC_HOME=str(world.root), OXYREC_TRITON_URL=dead)
    assert main(["recommend", "--user", "u1", "--scenario", "cart"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("oxyrec recommend: error:") and "Connection refused" in err
    # the server is up, but this data directory has no model repository
    env(OXYREC_HOME=str(tmp_path / "empty"), OXYREC_TRITON_URL=server.http_url)
    assert main(["recommend", "--user", "u1", "--scenario", "cart"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model repository" in err and "not found" in err
    # --url wins over OXYREC_TRITON_URL
    env(OXYREC_HOME=str(world.root), OXYREC_TRITON_URL=server.http_url)
    assert main(["recommend", "--user", "u1", "--scenario", "cart", "--url", dead, "--json"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Connection refused" in err
    assert main(["serve", "--repository", str(tmp_path / "empty")]) == 1
    assert "holds no published model" in capsys.readouterr().err


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if int(rest[1]) == pid:
            out.append((int(stat.parent.name), comm))
    return out


def _serve(repo: Path, tmp: Path) -> tuple[subprocess.Popen, int]:
    """``oxyrec serve`` in its own process; returns it once it prints that it serves, and its tritonserver's pid."""
    proc = subprocess.Popen([sys.executable, "-m", "triton_repo.cli", "serve", "--repository", str(repo),
                             "--http-port", str(free_port()), "--grpc-port", str(free_port())],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready and proc.stdout.readline().startswith("serving "):
            servers = [pid for pid, comm in _children(proc.pid) if comm == "tritonserver"]
            assert len(servers) == 1, _children(proc.pid)
            return proc, servers[0]
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"oxyrec serve did not come up: {proc.stderr.read()}")


def test_serve_exits_1_when_tritonserver_dies_and_0_on_sigterm(served_world, tmp_path):
    world, _, _ = served_world
    repo = world.root / "triton_repository"
    proc, server_pid = _serve(repo, tmp_path)
    try:
        os.kill(server_pid, signal.SIGKILL)
        assert proc.wait(60) == 1
        err = proc.stderr.read()
        assert err.count("\n") == 1 and "tritonserver exited with code -9 while serving" in err
    finally:
        proc.kill()
    proc, server_pid = _serve(repo, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not Path(f"/proc/{server_pid}").exists()  # the server was stopped with it
    finally:
        proc.kill()
