"""A local stand-in for the Gemini REST endpoint (generateContent, batchEmbedContents), so the real
``google-genai`` client can be driven with no network. Each request is answered by the test's
``responder(task_prompt, body) -> (status, json)``; every request is recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from flask import Flask, jsonify, request
from werkzeug.serving import make_server


def text_response(text: str, finish: str = "STOP", prompt_tokens: int = 100, output_tokens: int = 20) -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish}],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
    }


def json_response(obj: dict, **kw) -> dict:
    return text_response(json.dumps(obj), **kw)


class FakeGemini:
    def __init__(self, responder: Callable[[str, dict], tuple[int, dict]]) -> None:
        self.responder = responder
        self.requests: list[dict] = []
        app = Flask("fake-gemini")

        @app.post("/<version>/models/<path:model_action>")
        def generate(version: str, model_action: str):
            body = request.get_json(force=True)
            model, action = model_action.rsplit(":", 1)
            self.requests.append(
                {"model": model, "action": action, "body": body, "key": request.headers.get("x-goog-api-key")}
            )
            if action == "batchEmbedContents":
                vectors = [{"values": _embed(r["content"]["parts"][0]["text"])} for r in body["requests"]]
                return jsonify({"embeddings": vectors})
            prompt = " ".join(p.get("text", "") for c in body["contents"] for p in c["parts"])
            status, payload = self.responder(prompt, body)
            return jsonify(payload), status

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGemini:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    def generate_calls(self) -> list[dict]:
        return [r for r in self.requests if r["action"] == "generateContent"]


def _embed(text: str) -> list[float]:
    """A deterministic 8-d 'embedding': texts sharing their first word point the same way."""
    word = text.split()[0].lower() if text.split() else ""
    seed = sum(map(ord, word)) % 8
    return [1.0 if i == seed else 0.1 for i in range(8)]
