"""Local HTTP servers speaking OpenAI Chat Completions and Anthropic Messages, answering from scripts.

A script maps a task instruction to the turns the "model" plays: {"tool": name, "arguments": {...}} for one tool
call, {"text": "..."} for a final answer, or {"raw": <verbatim content/tool_calls>} to produce malformed output.
The turn is the number of assistant messages already in the request, so concurrent episodes don't interfere.
Every request body is recorded for assertions.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

Turn = dict[str, Any]


@dataclass
class Script:
    by_instruction: dict[str, list[Turn]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def turns_for(self, instruction: str) -> list[Turn]:
        for key, turns in self.by_instruction.items():
            if key in instruction:
                return turns
        raise KeyError(f"no script for instruction {instruction!r}")


_ids = itertools.count(1)


def _first_user_text(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def openai_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        script.requests.append(body)
        turn_index = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        turn = script.turns_for(_first_user_text(body["messages"]))[turn_index]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "tool_calls"
        if "text" in turn:
            message["content"], finish = turn["text"], "stop"
        elif "raw" in turn:
            message["tool_calls"] = turn["raw"]
        else:
            message["tool_calls"] = [{
                "id": f"call_{next(_ids)}", "type": "function",
                "function": {"name": turn["tool"], "arguments": json.dumps(turn.get("arguments", {}))},
            }]
        return JSONResponse({
            "id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": finish, "message": message, "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    return app


def anthropic_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/messages")
    async def messages(request: Request) -> JSONResponse:
        body = await request.json()
        script.requests.append(body)
        turn_index = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        turn = script.turns_for(_first_user_text(body["messages"]))[turn_index]
        if "text" in turn:
            content, stop = [{"type": "text", "text": turn["text"]}], "end_turn"
        elif "raw" in turn:
            content, stop = turn["raw"], "tool_use"
        else:
            content = [{"type": "tool_use", "id": f"toolu_{next(_ids)}", "name": turn["tool"],
                        "input": turn.get("arguments", {})}]
            stop = "tool_use"
        return JSONResponse({
            "id": f"msg_{next(_ids)}", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        })

    return app


class LocalServer:
    """uvicorn on 127.0.0.1 with an ephemeral port, on a daemon thread."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("scripted LLM server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
