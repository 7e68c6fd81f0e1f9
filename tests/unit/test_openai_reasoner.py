import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from models.reasoning import OpenAICompatibleReasoner, RuleBasedReasoner, UserContext, to_prompt
from models.reasoning.context import ContextEvent

KEY_ENV = "OXYREC_TEST_LLM_KEY"
SECRET = "sk-test-not-a-real-key-123"


class FakeLLM(ThreadingHTTPServer):
    """An OpenAI-compatible /chat/completions imitation with failure modes."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.requests = 0
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []
        self.fail_left = 0
        self.sleep_s = 0.0
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):  # the client hung up on a slow answer: expected here
        pass

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        srv: FakeLLM = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests += 1
            srv.auth.append(self.headers.get("Authorization"))
            srv.bodies.append(body)
            fail = srv.fail_left > 0
            srv.fail_left -= fail
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": "not found"}')
        user_line = body["messages"][1]["content"].splitlines()[0]
        ok = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"  LLM says: {user_line}\n"}}]}).encode()
        mode = srv.mode
        if mode == "slow":
            time.sleep(srv.sleep_s)
            return self._send(200, ok)
        if mode == "flaky" and fail:
            return self._send(500, b'{"error": "overloaded"}')
        if mode == "rate_limited" and fail:
            return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0"})
        if mode == "bad_request":
            return self._send(400, b'{"error": "bad model"}')
        if mode == "malformed":
            return self._send(200, b"this is {not json")
        if mode == "no_content":
            return self._send(200, json.dumps({"choices": [{"message": {"role": "assistant"}}]}).encode())
        return self._send(200, ok)


@pytest.fixture
def server():
    srv = FakeLLM()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def contexts(n: int = 3) -> list[UserContext]:
    out = []
    for k in range(n):
        e = ContextEvent(f"i{k}", f"Voltix smartphone {k}", "Electronics > Smartphones", "smartphones", "cart",
                         1_790_000_000 + k, "product_detail", 500.0)
        out.append(UserContext(f"user{k}", 1_790_100_000, {"price_sensitivity": "high"}, None, events=(e,), cart=(e,), n_events=1))
    return out


def reasoner(server, **kw) -> OpenAICompatibleReasoner:
    kw = {"timeout_s": 2.0, "max_retries": 3, "backoff_s": 0.01, "batch_size": 2, "api_key_env": KEY_ENV, **kw}
    return OpenAICompatibleReasoner(server.base_url, "tiny-llm", **kw)


def test_ok_sends_prompt_and_key_then_caches(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    ctxs = contexts(5)
    r = reasoner(server, cache_dir=tmp_path / "llm-cache")
    texts = r.generate(ctxs)
    assert texts == [f"LLM says: {to_prompt(c).splitlines()[0]}" for c in ctxs]  # order kept, stripped
    assert texts[3].startswith("LLM says: User user3, as of")
    assert server.requests == 5 and r.stats.requests == 5 and r.stats.llm_answers == 5
    assert server.auth == [f"Bearer {SECRET}"] * 5
    body = server.bodies[0]
    assert body["model"] == "tiny-llm" and body["messages"][0]["role"] == "system"
    assert {b["messages"][1]["content"] for b in server.bodies} == {to_prompt(c) for c in ctxs}
    # second refresh: served from the on-disk cache, the server sees nothing
    r2 = reasoner(server, cache_dir=tmp_path / "llm-cache")
    assert r2.generate(ctxs) == texts
    assert server.requests == 5 and r2.stats.cache_hits == 5 and r2.stats.requests == 0
    assert len(list((tmp_path / "llm-cache").rglob("*.json"))) == 5
    assert not list((tmp_path / "llm-cache").rglob("*.tmp"))


def test_key_is_read_at_call_time(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    r = reasoner(server)
    r.generate(contexts(1))
    monkeypatch.setenv(KEY_ENV, "rotated-key")
    r.generate(contexts(1))
    assert server.auth == [None, "Bearer rotated-key"]


def test_500_twice_then_ok_is_retried(server):
    server.mode, server.fail_left = "flaky", 2
    r = reasoner(server, batch_size=1)
    results = r.generate_detailed(contexts(1))
    assert results[0].source == "llm" and results[0].text.startswith("LLM says")
    assert server.requests == 3 and r.stats.retries == 2 and r.stats.requests == 3 and r.stats.fallbacks == 0


def test_429_is_retried(server):
    server.mode, server.fail_left = "rate_limited", 1
    r = reasoner(server)
    assert r.generate_detailed(contexts(1))[0].source == "llm"
    assert r.stats.retries == 1 and server.requests == 2


def test_slow_endpoint_times_out_and_falls_back(server, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.mode, server.sleep_s = "slow", 0.6
    ctxs = contexts(2)
    r = reasoner(server, timeout_s=0.2, max_retries=1, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="models.reasoning.openai_compat"):
        results = r.generate_detailed(ctxs)
    expected = RuleBasedReasoner().generate(ctxs)
    assert [x.text for x in results] == expected
    assert all(x.source == "fallback" and "timeout" in x.error for x in results)
    assert r.stats.requests == 4 and r.stats.retries == 2 and r.stats.fallbacks == 2
    assert "falling back" in caplog.text and "user0" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("mode, message", [("malformed", "not JSON"), ("no_content", "no choices[0].message.content"),
                                           ("bad_request", "HTTP 400")])
def test_bad_answers_fall_back_without_retry(server, tmp_path, mode, message):
    server.mode = mode
    ctxs = contexts(1)
    r = reasoner(server, cache_dir=tmp_path)
    result = r.generate_detailed(ctxs)[0]
    assert result.source == "fallback" and message in result.error
    assert result.text == RuleBasedReasoner().generate(ctxs)[0]
    assert "accessories" in result.text
    assert server.requests == 1 and r.stats.retries == 0 and r.stats.fallbacks == 1
    # fallbacks are not cached: once the endpoint is healthy the LLM is asked again
    server.mode = "ok"
    assert r.generate_detailed(ctxs)[0].source == "llm" and server.requests == 2


def test_connection_refused_falls_back():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = OpenAICompatibleReasoner(f"http://127.0.0.1:{port}", "m", timeout_s=1, max_retries=2, backoff_s=0.01)
    result = r.generate_detailed(contexts(1))[0]
    assert result.source == "fallback" and "connection error" in result.error
    assert r.stats.requests == 3 and r.stats.retries == 2


def test_corrupt_cache_entry_is_a_miss(server, tmp_path):
    ctxs = contexts(1)
    r = reasoner(server, cache_dir=tmp_path)
    key = r.cache_key(to_prompt(ctxs[0]))
    path = tmp_path / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True)
    path.write_text("{truncated")
    assert r.generate_detailed(ctxs)[0].source == "llm" and server.requests == 1
    assert json.loads(path.read_text())["text"].startswith("LLM says")


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="base_url"):
        OpenAICompatibleReasoner("localhost:8000", "m")
    with pytest.raises(ValueError, match="batch_size"):
        OpenAICompatibleReasoner("http://x", "m", batch_size=0)
