"""A real OpenAI-compatible chat server on 127.0.0.1 for the judge tests (standard library only,
plus a small transformers model for the model-backed modes).

`POST /v1/chat/completions` answers in the OpenAI response format. The request's `model` picks
the behaviour:

- `tiny`: a real causal LM generates the reply (greedy, at most `max_tokens`, capped at 24).
- `tiny-choice`: the real LM picks, by log-likelihood, one of the replies the rubric allows
  (so the reply is well formed and the choice is the model's).
- `scripted`: a fixed, well-formed grade from the prompt's reference and predicted answers
  (equal after normalisation: yes/5 and [[1]]; sharing a word: yes/3 and [[0.5]]; else no/1 and [[0]]);
  an unparseable reply when the prompt contains "garbage-please".
- `flaky-500`: HTTP 500 for the first two requests of each distinct prompt, then `scripted`.
- `rate-limit-once`: HTTP 429 for the first request of each prompt, then `scripted`.
- `drop-once`: closes the connection without answering the first request of each prompt.
- `slow`: sleeps `SLOW_SECONDS` (past the tests' client timeout) before answering.
- `sleepy`: sleeps `SLEEPY_SECONDS`, then `scripted` (to observe concurrency).
- `garbage`: an unparseable reply. `empty`: a reply whose content is null.
- `bad-request`: HTTP 400. `unauthorized`: HTTP 401.

The server counts requests (`count`, per model in `by_model`) and, per model, the most requests in
flight at once (`max_in_flight[model]`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 1.0
SLEEPY_SECONDS = 0.3


# ----------------------------------------------------------------------------------------------
# Real models


class TinyQwenLM:
    """The tiny random Qwen2.5-VL of `ego3s.models.tiny`, used as a text-only chat model."""

    def __init__(self, path):
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        self.tokenizer = AutoProcessor.from_pretrained(path).tokenizer
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()
        self.name = "tiny-qwen2.5-vl"

    def encode(self, messages):
        enc = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        return enc["input_ids"]

    def encode_continuation(self, text):
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class ByteLM:
    """A one-layer random Llama over UTF-8 bytes, built from a config (the fallback when the tiny
    Qwen is not available)."""

    def __init__(self, seed: int = 0):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=260,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=8192,
            bos_token_id=256,
            eos_token_id=257,
            pad_token_id=258,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = LlamaForCausalLM(cfg).eval()
        self.name = "byte-llama"

    def encode(self, messages):
        import torch

        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"
        return torch.tensor([[256] + list(text.encode("utf-8"))[-4000:]])

    def encode_continuation(self, text):
        import torch

        return torch.tensor([list(text.encode("utf-8"))])

    def decode(self, ids):
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class LMBackend:
    """Generation and candidate scoring with one of the models above, one call at a time."""

    def __init__(self, lm):
        self.lm = lm
        self.lock = threading.Lock()

    def generate(self, messages, max_tokens: int) -> str:
        import torch

        with self.lock, torch.no_grad():
            ids = self.lm.encode(messages)
            out = self.lm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max(1, min(int(max_tokens), 24)),
                do_sample=False,
            )
            return self.lm.decode(out[0, ids.shape[1] :].tolist())

    def choose(self, messages, candidates: list[str]) -> str:
        import torch

        with self.lock, torch.no_grad():
            prompt = self.lm.encode(messages)
            best, best_lp = candidates[0], None
            for c in candidates:
                cont = self.lm.encode_continuation(c)
                ids = torch.cat([prompt, cont], dim=1)
                logits = self.lm.model(input_ids=ids).logits[0, prompt.shape[1] - 1 : -1]
                lp = torch.log_softmax(logits.float(), dim=-1).gather(1, cont[0][:, None]).sum().item()
                if best_lp is None or lp > best_lp:
                    best, best_lp = c, lp
            return best


# ----------------------------------------------------------------------------------------------
# Scripted grading (reads the prompts of ego3s.judge)


def _words(s: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", s.lower()) if w not in ("a", "an", "the")}


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    return text[i + len(start) : j if j >= 0 else None].strip()


def scripted_reply(messages) -> str:
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    if "garbage-please" in user.lower():  # lets one item of a batch fail to parse
        return "Well, it depends on how you look at it."
    if "[The Start of Reference Answer]" in user:  # EgoThink
        ref = _between(user, "[The Start of Reference Answer]", "[The End of Reference Answer]") or ""
        pred = _between(user, "[The Start of Assistant's Answer]", "[The End of Assistant's Answer]") or ""
        grade = _grade(ref, pred)
        return f"Compared with the reference. Rating: [[{['0', '0.5', '1'][grade]}]]"
    ref = _between(user, "Correct Answer:", "\n") or ""  # EgoTextVQA's official prompt
    pred = _between(user, "Predicted Answer:", "\n") or ""
    grade = _grade(ref, pred)
    return ["{'pred': 'no', 'score': 1}", "{'pred': 'yes', 'score': 3}", "{'pred': 'yes', 'score': 5}"][grade]


def _grade(ref: str, pred: str) -> int:
    r, p = _words(ref), _words(pred)
    if r and r == p:
        return 2
    return 1 if r & p else 0


def candidates_for(messages) -> list[str]:
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    if "[[" in user:
        return ["Rating: [[0]]", "Rating: [[0.5]]", "Rating: [[1]]"]
    return [f"{{'pred': '{p}', 'score': {k}}}" for p in ("yes", "no") for k in range(6)]


# ----------------------------------------------------------------------------------------------
# The server


class JudgeServer:
    """`with JudgeServer(lm=...) as srv: srv.base_url` -> "http://127.0.0.1:PORT/v1"."""

    def __init__(self, lm=None):
        self.backend = LMBackend(lm) if lm is not None else None
        self.count = 0
        self.by_model: Counter = Counter()
        self.per_prompt: Counter = Counter()
        self.in_flight: Counter = Counter()  # per model
        self.max_in_flight: Counter = Counter()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> JudgeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def reset_counts(self) -> None:
        with self.lock:
            self.count = 0
            self.by_model.clear()
            self.per_prompt.clear()
            self.max_in_flight.clear()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}")
                try:
                    req = json.loads(body)
                    model, messages = req["model"], req["messages"]
                except (ValueError, KeyError, TypeError):
                    return self._error(400, "bad JSON request")
                key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
                with server.lock:
                    server.count += 1
                    server.by_model[model] += 1
                    server.per_prompt[(model, key)] += 1
                    nth = server.per_prompt[(model, key)]
                    server.in_flight[model] += 1
                    server.max_in_flight[model] = max(server.max_in_flight[model], server.in_flight[model])
                try:
                    self._serve(model, messages, int(req.get("max_tokens") or 64), nth)
                finally:
                    with server.lock:
                        server.in_flight[model] -= 1

            def _serve(self, model, messages, max_tokens, nth):
                if model == "flaky-500" and nth <= 2:
                    return self._error(500, "internal error (scripted)")
                if model == "rate-limit-once" and nth == 1:
                    return self._error(429, "rate limited (scripted)")
                if model == "drop-once" and nth == 1:
                    self.close_connection = True
                    return  # no response at all
                if model == "bad-request":
                    return self._error(400, "bad request (scripted)")
                if model == "unauthorized":
                    return self._error(401, "invalid api key (scripted)")
                if model == "slow":
                    time.sleep(SLOW_SECONDS)
                if model == "sleepy":
                    time.sleep(SLEEPY_SECONDS)
                if model == "garbage":
                    return self._reply(model, "I think the answer is quite good, maybe.")
                if model == "empty":
                    return self._reply(model, None)
                if model in ("tiny", "tiny-choice"):
                    if server.backend is None:
                        return self._error(404, "no model loaded")
                    if model == "tiny":
                        return self._reply(model, server.backend.generate(messages, max_tokens))
                    return self._reply(model, server.backend.choose(messages, candidates_for(messages)))
                return self._reply(model, scripted_reply(messages))

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

            def _reply(self, model, content):
                with server.lock:
                    n = server.count
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                                "logprobs": None,
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _error(self, status, message):
                self._send(
                    status,
                    {"error": {"message": message, "type": "scripted_error", "param": None, "code": str(status)}},
                )

        return Handler
