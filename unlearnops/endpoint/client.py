"""A small client for the OpenAI-compatible completions API, many requests in flight at once.

Greedy completions (`temperature: 0`) and prompt log-probabilities (`echo: true`, `logprobs: 0`,
`max_tokens: 0`) are all MUSE needs. Prompts are sent as token ids (the OpenAI completions API
accepts "an array of tokens"), encoded here exactly as the evaluator encodes them, so the
server's own tokenization, BOS handling and truncation play no part.

Requests go out concurrently from a thread pool over one connection pool: vLLM batches whatever
is in flight (continuous batching), so the endpoint is measured in batches, not one request at a
time. The API key travels in the Authorization header only; it is never printed, logged or
written (errors name the URL, never the key).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import UnlearnopsError

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT_S = 300.0
CONNECT_RETRIES = 3
NO_PROMPT_LOGPROBS = (
    "this server cannot measure PrivLeak: pass --skip privleak to verify the rest, or verify a vLLM replica of the same version"
)


class EndpointError(UnlearnopsError):
    """The server refused or failed a request; `status` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def public_url(url: str) -> str:
    """The URL without credentials or query (what may be printed and recorded)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as err:
        raise UnlearnopsError(f"--url {url[:200]!r}: not a URL ({err}); e.g. http://127.0.0.1:8000", exit_code=2, field="--url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnlearnopsError(f"--url {url[:200]!r}: expected the server's base URL, e.g. http://127.0.0.1:8000 (http or https)",
                              exit_code=2, field="--url")
    if "@" in parts.netloc:
        raise UnlearnopsError("--url: credentials in the URL are not accepted; pass the API key with --api-key or $UNLEARNOPS_API_KEY",
                              exit_code=2, field="--url")
    return public_url(url)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    token_logprobs: list[float | None] | None  # echo: one per prompt token (the first is None)
    top_logprobs: list[dict[str, float] | None] | None = None


class OpenAIEndpoint:
    """`/v1/models` and `/v1/completions` of one server, with a bounded number of requests in flight."""

    def __init__(self, url: str, *, api_key: str | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        import httpx

        if concurrency < 1:
            raise UnlearnopsError(f"--concurrency {concurrency}: must be at least 1")
        self.url = check_url(url)
        self.base = self.url if self.url.endswith("/v1") else self.url + "/v1"
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        # trust_env=False: a proxy from the environment must not see (or reroute) the key and the prompts.
        # retries: a connection refused or reset before any byte was sent (a busy server's full backlog) is tried again.
        self._http = httpx.Client(headers=headers, timeout=timeout_s, trust_env=False,
                                  transport=httpx.HTTPTransport(retries=CONNECT_RETRIES, limits=limits))
        self._lock = threading.Lock()
        self.requests_sent = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIEndpoint:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # ---- calls --------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """The `data` of GET /v1/models: the served model ids (and vLLM's `root`, `max_model_len`, `owned_by`)."""
        document = self._call("GET", "/models")
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, list):
            raise EndpointError(f"{self.base}/models: the answer has no model list; is this an OpenAI-compatible server?")
        return [item for item in data if isinstance(item, dict)]

    def complete(self, model: str, prompt: Sequence[int], *, max_tokens: int) -> Completion:
        """Greedy continuation of a prompt given as token ids."""
        body = {"model": model, "prompt": list(prompt), "max_tokens": max_tokens, "temperature": 0, "n": 1}
        return self._completion(body)

    def prompt_logprobs(self, model: str, prompt: Sequence[int], *, max_model_len: int | None = None) -> list[float]:
        """log p(token_i | tokens before it) for every prompt token after the first.

        `echo` + `logprobs: 0` + `max_tokens: 0` (vLLM returns the prompt's log-probabilities and
        generates nothing). A server that cannot must say so (400) or omit them: both are errors.
        vLLM still reserves one generated token, so a prompt as long as the server's context
        (`max_model_len`, e.g. a text the evaluator cut to the model's context) would be refused:
        then the last token's log-probability is read at the one generated position instead
        (vLLM's `logprob_token_ids` extension), from the same logits.
        """
        try:
            if max_model_len and len(prompt) >= max_model_len:
                return self._prompt_logprobs_at_context(model, list(prompt))
            body = {"model": model, "prompt": list(prompt), "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0}
            return self._echoed(body, len(prompt))
        except EndpointError as err:
            if err.status not in (400, 422):
                raise
            raise EndpointError(f"{err} (asked for the prompt's log-probabilities: echo + logprobs); {NO_PROMPT_LOGPROBS}",
                                status=err.status) from None

    def _prompt_logprobs_at_context(self, model: str, prompt: list[int]) -> list[float]:
        last = prompt[-1]
        body = {"model": model, "prompt": prompt[:-1], "max_tokens": 1, "echo": True, "logprobs": 0, "temperature": 0,
                "logprob_token_ids": [last], "return_tokens_as_token_ids": True}
        completion = self._completion(body)
        values = self._echoed(body, len(prompt) - 1, completion)
        final = (completion.top_logprobs or [None])[-1] or {}
        value = final.get(f"token_id:{last}")
        if not isinstance(value, (int, float)):
            raise EndpointError(
                f"{self.base}/completions: a text fills the server's whole context and the server returned no log-probability for "
                "its last token (vLLM's logprob_token_ids); restart the server with a longer --max-model-len"
            )
        return [*values, float(value)]

    def _echoed(self, body: dict[str, Any], length: int, completion: Completion | None = None) -> list[float]:
        """The log-probabilities of prompt tokens 2..length (the first has none; a generated token may follow)."""
        found = (completion or self._completion(body)).token_logprobs
        if found is None or len(found) < length:
            raise EndpointError(
                f"{self.base}/completions: no prompt log-probabilities in the answer (echo + logprobs); {NO_PROMPT_LOGPROBS}"
            )
        if any(not isinstance(value, (int, float)) for value in found[1:length]):
            raise EndpointError(f"{self.base}/completions: a prompt token has no log-probability; {NO_PROMPT_LOGPROBS}")
        return [float(value) for value in found[1:length]]

    def map(self, call: Callable[[Any], Any], items: Sequence[Any], on_done: Callable[[int], None] | None = None) -> list[Any]:
        """call(item) for every item, `concurrency` at a time, results in the items' order.

        The first failure cancels what has not started and is raised.
        """
        results: list[Any] = [None] * len(items)
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="endpoint") as pool:
            futures = {pool.submit(call, item): index for index, item in enumerate(items)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    results[futures[future]] = future.result()
                    if on_done is not None:
                        on_done(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results

    # ---- plumbing -----------------------------------------------------------------------------
    def _completion(self, body: dict[str, Any]) -> Completion:
        document = self._call("POST", "/completions", body)
        choices = document.get("choices") if isinstance(document, dict) else None
        if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("text"), str):
            raise EndpointError(f"{self.base}/completions: the answer has no choices[0].text; is this an OpenAI-compatible server?")
        choice = choices[0]
        logprobs = choice.get("logprobs")
        token_logprobs = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        top_logprobs = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
        return Completion(choice["text"], choice.get("finish_reason"), token_logprobs if isinstance(token_logprobs, list) else None,
                          top_logprobs if isinstance(top_logprobs, list) else None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        url = self.base + path
        with self._lock:
            self.requests_sent += 1
        try:
            response = self._http.request(method, url, json=body)
        except httpx.HTTPError as err:
            raise EndpointError(f"{url}: no answer ({type(err).__name__}: {err}); is the server running at {self.url}?") from None
        if response.status_code in (401, 403):
            raise EndpointError(
                f"{url}: {response.status_code} {response.reason_phrase}; pass the server's API key with --api-key or "
                "$UNLEARNOPS_API_KEY", status=response.status_code,
            )
        if response.status_code >= 400:
            raise EndpointError(f"{url}: {response.status_code} {_server_message(response)}", status=response.status_code)
        try:
            return response.json()
        except ValueError:
            raise EndpointError(f"{url}: the answer is not JSON; is this an OpenAI-compatible server?") from None


def _server_message(response) -> str:
    """The server's own error message (OpenAI shape: {"error": {"message": ...}}), cut short."""
    try:
        document = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    error = document.get("error") if isinstance(document, dict) else None
    message = error.get("message") if isinstance(error, dict) else (error or document.get("detail") if isinstance(document, dict) else None)
    return str(message or response.reason_phrase)[:300]
