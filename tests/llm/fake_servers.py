"""Local HTTP servers speaking the Anthropic Messages and OpenAI Chat Completions / Embeddings wire protocols.

The real SDKs are pointed at them (base_url). Answers come from a `responder(request) -> Reply`; faults (429, 500,
slow answers) can be queued for requests matching a predicate. Every request is recorded with the usage returned,
so tests can count requests per stage and compare cost accounting with what the "provider" billed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STAGE_RE = re.compile(r"You are the `(\w+)` step")
SCENARIO_RE = re.compile(r"^Scenario: (\S+)", re.M)
TASK_RE = re.compile(r"^Task index: (\d+)", re.M)


@dataclass
class Recorded:
    api: str  # "anthropic" | "openai" | "embeddings"
    body: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    usage: tuple[int, int] = (0, 0)  # (all prompt tokens, output tokens) as billed
    cache: tuple[int, int] = (0, 0)  # (prompt-cache reads, prompt-cache writes) among the prompt tokens
    streamed: bool = False  # answered as server-sent events

    @property
    def cache_marked(self) -> bool:
        sys_ = self.body.get("system")
        return isinstance(sys_, list) and any("cache_control" in b for b in sys_)

    @property
    def system(self) -> str:
        if self.api == "anthropic":
            sys_ = self.body.get("system", "")
            return sys_ if isinstance(sys_, str) else " ".join(b.get("text", "") for b in sys_)
        return next((m["content"] for m in self.body.get("messages", []) if m["role"] == "system"), "")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [m for m in self.body.get("messages", []) if m["role"] != "system"]

    @property
    def stage(self) -> str | None:
        m = STAGE_RE.search(self.system)
        return m.group(1) if m else None

    @property
    def first_user(self) -> str:
        return _text(self.messages[0]["content"]) if self.messages else ""

    @property
    def last_user(self) -> str:
        return _text(self.messages[-1]["content"]) if self.messages else ""

    @property
    def scenario(self) -> str | None:
        m = SCENARIO_RE.search(self.first_user) or SCENARIO_RE.search(self.system)
        return m.group(1) if m else None

    @property
    def task_index(self) -> int | None:
        m = TASK_RE.search(self.first_user)
        return int(m.group(1)) if m else None

    @property
    def attempt(self) -> int:
        """1 + the number of earlier assistant turns: which scripted answer this request should get."""
        return 1 + sum(1 for m in self.messages if m["role"] == "assistant")

    @property
    def wants_structured(self) -> bool:
        return bool(self.body.get("tools")) or "response_format" in self.body


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish: str = "stop"  # "stop" | "length"
    error_type: str = "api_error"


@dataclass
class Fault:
    when: Callable[[Recorded], bool]
    reply: Reply
    times: int = 1


def usage_for(body: dict[str, Any], text: str) -> tuple[int, int]:
    """Deterministic token counts for a request/answer pair (about 4 characters per token)."""
    prompt = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
    return max(1, len(prompt) // 4), max(1, len(text) // 4)


def sse_events(message: dict[str, Any], chunk: int = 2000) -> bytes:
    """An Anthropic Messages answer as the event stream the API sends when `stream` is true."""
    def event(kind: str, data: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    out = [event("message_start", {"message": start})]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            out.append(event("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}}))
            text = block["text"]
            for k in range(0, len(text), chunk):
                out.append(event("content_block_delta", {"index": i, "delta": {"type": "text_delta",
                                                                                "text": text[k : k + chunk]}}))
        else:
            out.append(event("content_block_start", {"index": i, "content_block": {**block, "input": {}}}))
            blob = json.dumps(block["input"])
            for k in range(0, len(blob), chunk):
                out.append(event("content_block_delta", {"index": i, "delta": {"type": "input_json_delta",
                                                                                "partial_json": blob[k : k + chunk]}}))
        out.append(event("content_block_stop", {"index": i}))
    out.append(event("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                       "usage": {"output_tokens": usage["output_tokens"]}}))
    out.append(event("message_stop", {}))
    return "".join(out).encode()


def hash_embedding(text: str, dim: int = 256) -> list[float]:
    """A deterministic bag-of-trigrams vector: near-identical texts get near-identical embeddings."""
    vec = [0.0] * dim
    low = text.lower()
    for i in range(len(low) - 2):
        h = int(hashlib.md5(low[i : i + 3].encode()).hexdigest()[:8], 16)
        vec[h % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class FakeLLMServer:
    def __init__(self, responder: Callable[[Recorded], Reply] | None = None) -> None:
        self.responder = responder or (lambda req: Reply(text="{}"))
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.block: threading.Event | None = None  # when set, requests matching `block_when` wait on it
        self.block_when: Callable[[Recorded], bool] | None = None
        self.blocked = threading.Event()
        self.prompt_cache: set[str] = set()  # system prompts seen: later requests "read" them from the cache
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?")[0]
                api = ("anthropic" if path.endswith("/messages") else
                       "embeddings" if path.endswith("/embeddings") else "openai")
                req = Recorded(api=api, body=body, headers={k.lower(): v for k, v in self.headers.items()})
                status, headers, payload, delay = server._answer(req)
                if delay:
                    time.sleep(delay)
                streamed = status == 200 and api == "anthropic" and body.get("stream")
                data = sse_events(payload) if streamed else json.dumps(payload).encode()
                if streamed:
                    req.streamed = True
                try:
                    self.send_response(status)
                    self.send_header("content-type", "text/event-stream" if streamed else "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.block is not None:
            self.block.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail(self, when: Callable[[Recorded], bool], reply: Reply, times: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(when, reply, times))

    # ---- answering -------------------------------------------------------------------------------------

    def _answer(self, req: Recorded) -> tuple[int, dict[str, str], dict[str, Any], float]:
        if self.block_when is not None and self.block is not None and self.block_when(req):
            self.blocked.set()
            self.block.wait(30)
        with self.lock:
            fault = next((f for f in self.faults if f.times > 0 and f.when(req)), None)
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            reply = fault.reply
        else:
            reply = Reply() if req.api == "embeddings" else self.responder(req)
        if reply.status != 200:
            req.status = reply.status
            with self.lock:
                self.requests.append(req)
            return reply.status, reply.headers, self._error(req.api, reply), reply.delay_s
        if req.api == "embeddings":
            inputs = req.body["input"] if isinstance(req.body["input"], list) else [req.body["input"]]
            tokens = sum(len(t) // 4 for t in inputs)
            req.usage = (tokens, 0)
            payload = {"object": "list", "model": req.body["model"], "usage": {"prompt_tokens": tokens,
                                                                                "total_tokens": tokens},
                       "data": [{"object": "embedding", "index": i, "embedding": hash_embedding(t)}
                                for i, t in enumerate(inputs)]}
        else:
            req.usage = usage_for(req.body, reply.text)
            system_tokens = len(req.system) // 4
            # Anthropic caches a system prompt marked with cache_control; OpenAI caches long prefixes by itself
            if system_tokens >= 256 and (req.api == "openai" or req.cache_marked):
                key = hashlib.sha256(req.system.encode()).hexdigest()
                with self.lock:
                    seen = key in self.prompt_cache
                    self.prompt_cache.add(key)
                if seen:
                    req.cache = (system_tokens, 0)
                elif req.api == "anthropic":
                    req.cache = (0, system_tokens)
            payload = self._anthropic(req, reply) if req.api == "anthropic" else self._openai(req, reply)
        with self.lock:
            self.requests.append(req)
        return 200, reply.headers, payload, reply.delay_s

    @staticmethod
    def _error(api: str, reply: Reply) -> dict[str, Any]:
        if api == "anthropic":
            return {"type": "error", "error": {"type": reply.error_type, "message": reply.text or "scripted error"}}
        return {"error": {"message": reply.text or "scripted error", "type": reply.error_type, "code": None}}

    @staticmethod
    def _anthropic(req: Recorded, reply: Reply) -> dict[str, Any]:
        content: list[dict[str, Any]]
        tools = req.body.get("tools") or []
        parsed = None
        if tools and reply.finish == "stop":
            try:
                parsed = json.loads(reply.text)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            content = [{"type": "tool_use", "id": "toolu_01", "name": tools[0]["name"], "input": parsed}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": reply.text}]
            stop = "max_tokens" if reply.finish == "length" else "end_turn"
        return {"id": f"msg_{len(reply.text)}", "type": "message", "role": "assistant", "model": req.body["model"],
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": req.usage[0] - sum(req.cache), "output_tokens": req.usage[1],
                          "cache_read_input_tokens": req.cache[0], "cache_creation_input_tokens": req.cache[1]}}

    @staticmethod
    def _openai(req: Recorded, reply: Reply) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": req.body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": reply.finish, "logprobs": None}],
                "usage": {"prompt_tokens": req.usage[0], "completion_tokens": req.usage[1],
                          "total_tokens": sum(req.usage), "prompt_tokens_details": {"cached_tokens": req.cache[0]}}}

    # ---- inspection ------------------------------------------------------------------------------------

    def ok_requests(self, stage: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.status == 200 and (stage is None or r.stage == stage)]

    def count(self, stage: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if stage is None or r.stage == stage)
