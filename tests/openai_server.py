"""A small, real OpenAI-compatible completions server on transformers, for the endpoint tests.

Not a mock: it loads a model directory as the evaluator does (`modeling.load_causal_lm`), decodes
greedily with `model.generate`, and returns prompt log-probabilities from one forward pass, so it
is "any OpenAI-compatible server" that is not vLLM. It answers `/v1/models` and `/v1/completions`
(prompt as token ids or text; `echo` + `logprobs`), checks a Bearer key, can refuse prompt
log-probabilities as OpenAI's current API does (`logprobs=False`), and counts how many requests
it had in flight at once.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 refuses connections when a client opens 16 at once
    daemon_threads = True


class CompletionServer:
    def __init__(self, model_dir: Path, served_name: str, *, api_key: str | None = None, logprobs: bool = True, delay_s: float = 0.05):
        from unlearnops.modeling import load_causal_lm

        loaded = load_causal_lm(model_dir)
        self.model, self.tokenizer = loaded.model.eval(), loaded.tokenizer
        self.served_name, self.api_key, self.logprobs, self.delay_s = served_name, api_key, logprobs, delay_s
        self.in_flight = self.max_in_flight = self.requests = 0
        self.prompts: list[list[int]] = []
        self._count, self._model_lock = threading.Lock(), threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> CompletionServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- the model --------------------------------------------------------------------------------
    def complete(self, ids: list[int], max_tokens: int) -> str:
        import torch

        from unlearnops.evaluate import generation

        config = generation.greedy_config(self.model, self.tokenizer, max_tokens)
        with self._model_lock, torch.inference_mode():
            input_ids = torch.tensor([ids])
            output = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
        new = generation.cut_at_eos(output[0, len(ids):].tolist(), set(generation.eos_token_ids(self.model, self.tokenizer)))
        return generation.decode(self.tokenizer, new)

    def echo_logprobs(self, ids: list[int]) -> list[float | None]:
        import torch

        with self._model_lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        values = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1).tolist()
        return [None, *values]

    # ---- HTTP -------------------------------------------------------------------------------------
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:  # quiet
                pass

            def _send(self, status: int, document: dict) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, {"error": {"message": "Unauthorized"}})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.served_name, "object": "model", "owned_by": "tests"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with server._count:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._complete(body)
                finally:
                    with server._count:
                        server.in_flight -= 1

            def _complete(self, body: dict) -> None:
                import time

                time.sleep(server.delay_s)  # a network round trip: lets concurrent requests overlap
                if body.get("model") != server.served_name:
                    self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                    return
                prompt = body["prompt"]
                ids = list(prompt) if isinstance(prompt, list) else server.tokenizer(prompt).input_ids
                server.prompts.append(ids)
                if body.get("echo") and body.get("logprobs") is not None:
                    if not server.logprobs:
                        self._send(400, {"error": {"message": "echo is not supported with logprobs for this model"}})
                        return
                    values = server.echo_logprobs(ids)
                    self._send(200, {"choices": [{"index": 0, "text": server.tokenizer.decode(ids), "finish_reason": "length",
                                                  "logprobs": {"token_logprobs": values, "tokens": [str(i) for i in ids]}}]})
                    return
                text = server.complete(ids, int(body.get("max_tokens") or 16))
                self._send(200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]})

        return Handler
