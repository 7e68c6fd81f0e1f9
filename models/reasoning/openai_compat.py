"""A real LLM behind any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, Ollama, ...).

For each context, ``POST {base_url}/chat/completions`` with ``{"model", "messages": [system, user], "temperature":
0, "max_tokens"}`` where the user message is :func:`models.reasoning.context.to_prompt`; the instruction is
``choices[0].message.content`` (stripped, whitespace collapsed, at most ``max_chars`` characters).

- Batching: contexts are processed in sequential chunks of ``batch_size``; the requests of one chunk run
  concurrently on a thread pool of ``batch_size`` workers (so at most ``batch_size`` requests are in flight).
- Retries: on timeouts, connection errors, HTTP 5xx and 429, up to ``max_retries`` retries (``max_retries + 1``
  attempts), sleeping ``backoff_s * 2 ** k`` before retry ``k`` (k = 0, 1, ...); a 429's ``Retry-After`` (seconds)
  is honoured up to 30 s. Other 4xx (bad request, bad key, unknown model) are not retried.
- Cache: ``sha256(model + "\\n" + system prompt + "\\n" + prompt)`` -> ``{cache_dir}/{key[:2]}/{key}.json``
  (``{"model", "text"}``), written to a temp file and ``os.replace``d (atomic); only real LLM answers are cached.
- Failure: after the retries, or on a malformed response (not JSON, no ``choices[0].message.content``, empty
  text; not retried), a warning is logged (never the API key) and the fallback reasoner's text is used for that
  user, flagged ``source == "fallback"`` in :meth:`generate_detailed`. A refresh never crashes on the endpoint.
- Auth: the key is read from the ``api_key_env`` environment variable at call time and sent as
  ``Authorization: Bearer <key>``; without it no header is sent (local servers often need none).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .context import UserContext, to_prompt
from .rules import RuleBasedReasoner

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are the reasoning module of an e-commerce recommender. From the user's context (profile, calendar, "
    "recent orders, cart, searches and browsing), infer what they are likely to shop for next and why: life "
    "events, complementary needs, seasonal or holiday needs, and their price level. Answer with one short "
    "paragraph (at most 60 words) of plain text, no lists, no preamble, no user id."
)


class MalformedResponse(ValueError):
    """The endpoint answered 2xx but not with an OpenAI-style chat completion."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class LLMStats:
    requests: int = 0  # HTTP attempts made (including retries)
    retries: int = 0
    cache_hits: int = 0
    fallbacks: int = 0
    llm_answers: int = 0  # fresh answers from the endpoint

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LLMResult:
    user_id: str
    text: str
    source: str  # "llm" | "cache" | "fallback"
    error: str | None = None  # why the fallback was used


class OpenAICompatibleReasoner:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OXYREC_LLM_API_KEY",
        timeout_s: float = 20,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        batch_size: int = 8,
        cache_dir: str | os.PathLike | None = None,
        fallback: RuleBasedReasoner | None = None,
        max_tokens: int = 160,
        max_chars: int = 600,
        system_prompt: str = SYSTEM_PROMPT,
    ):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must be a non-empty string")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or batch_size < 1:
            raise ValueError(
                f"need timeout_s > 0, max_retries >= 0, backoff_s >= 0, batch_size >= 1; got "
                f"{timeout_s}, {max_retries}, {backoff_s}, {batch_size}"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.batch_size = int(batch_size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.fallback = fallback if fallback is not None else RuleBasedReasoner()
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        self.system_prompt = system_prompt
        self.version = f"llm:{model}"
        self.stats = LLMStats()
        self._lock = threading.Lock()

    # ---- public
    def generate(self, contexts: Sequence[UserContext]) -> list[str]:
        return [r.text for r in self.generate_detailed(contexts)]

    def generate_detailed(self, contexts: Sequence[UserContext]) -> list[LLMResult]:
        contexts = list(contexts)
        out: list[LLMResult] = []
        with ThreadPoolExecutor(max_workers=self.batch_size, thread_name_prefix="oxyrec-llm") as pool:
            for lo in range(0, len(contexts), self.batch_size):  # sequential chunks, concurrent inside
                out += list(pool.map(self._one, contexts[lo : lo + self.batch_size]))
        return out

    def cache_key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.model}\n{self.system_prompt}\n{prompt}".encode("utf-8")).hexdigest()

    # ---- one user
    def _one(self, ctx: UserContext) -> LLMResult:
        prompt = to_prompt(ctx)
        key = self.cache_key(prompt)
        cached = self._cache_get(key)
        if cached is not None:
            self._count(cache_hits=1)
            return LLMResult(ctx.user_id, cached, "cache")
        try:
            text = self._complete(prompt)
        except Exception as exc:  # never crash a refresh: any failure falls back
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("LLM reasoner: falling back to %s for user %s (%s)", self.fallback.version, ctx.user_id, reason)
            self._count(fallbacks=1)
            return LLMResult(ctx.user_id, self.fallback.generate([ctx])[0], "fallback", reason)
        self._count(llm_answers=1)
        self._cache_put(key, text)
        return LLMResult(ctx.user_id, text, "llm")

    def _complete(self, prompt: str) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        ).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                return self._parse(self._post(body))
            except _Retryable as exc:
                if attempt == self.max_retries:
                    raise RuntimeError(f"{exc} (gave up after {attempt + 1} attempts)") from None
                delay = self.backoff_s * 2**attempt
                if exc.retry_after is not None:
                    delay = max(delay, min(30.0, exc.retry_after))
                self._count(retries=1)
                log.info("LLM reasoner: %s; retry %d/%d in %.2f s", exc, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)  # read at call time, never logged
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self._count(requests=1)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            if err.code == 429 or err.code >= 500:
                retry_after = None
                try:
                    retry_after = float(err.headers.get("Retry-After", ""))
                except (TypeError, ValueError):
                    pass
                raise _Retryable(f"HTTP {err.code} from {self.url}", retry_after) from None
            raise RuntimeError(f"HTTP {err.code} from {self.url} (not retried)") from None
        except (TimeoutError, socket.timeout) as err:
            raise _Retryable(f"timeout after {self.timeout_s} s from {self.url}") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"timeout after {self.timeout_s} s from {self.url}") from err
            raise _Retryable(f"connection error to {self.url}: {err.reason}") from err
        except (OSError, http.client.HTTPException) as err:  # reset or truncated mid-response
            raise _Retryable(f"connection error to {self.url}: {err}") from err

    def _parse(self, raw: bytes) -> str:
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MalformedResponse(f"response is not JSON ({err})") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise MalformedResponse("response has no choices[0].message.content") from None
        if not isinstance(content, str) or not content.strip():
            raise MalformedResponse("response content is empty or not a string")
        text = " ".join(content.split())
        return text[: self.max_chars]

    # ---- stats and cache
    def _count(self, **incs: int) -> None:
        with self._lock:
            for k, v in incs.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        path = self._cache_path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:  # a corrupt entry is a miss, not a failure
            log.warning("LLM reasoner: ignoring unreadable cache entry %s (%s)", path, err)
            return None
        text = entry.get("text") if isinstance(entry, dict) else None
        return text if isinstance(text, str) and text else None

    def _cache_put(self, key: str, text: str) -> None:
        if self.cache_dir is None:
            return
        path = self._cache_path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"model": self.model, "text": text}, fh)
            os.replace(tmp, path)
        except OSError as err:  # a cache that cannot be written only costs a future request
            log.warning("LLM reasoner: could not write cache entry %s (%s)", path, err)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
