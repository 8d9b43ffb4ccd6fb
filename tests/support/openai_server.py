"""A local server speaking the OpenAI REST wire format, backed by real offline models.

- `POST /v1/audio/transcriptions` (multipart) transcribes the uploaded WAV with Whisper.
- `POST /v1/chat/completions` with `stream=true` answers from a script (text or tool calls)
  as server-sent `chat.completion.chunk` events, tool-call arguments split into fragments.
- `POST /v1/audio/speech` with `response_format=pcm` speaks with Piper, resampled to 24 kHz.
- `GET /v1/models` lists three made-up local model ids.

Every request is recorded (path, headers, JSON or form fields) so tests check what our code sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from voiceforge.audio.codecs import unwrap_wav
from voiceforge.audio.resample import resample


class OpenAIServer:
    """The app plus its recorded requests and a chat script."""

    def __init__(self, cache_dir: Path) -> None:
        self.requests: list[dict[str, Any]] = []
        self.chat_script: list[dict[str, Any]] = []  # {"text": str} or {"tool_calls": [(name, args)]}
        self.fail_next: list[int] = []  # HTTP statuses to answer with, one per request
        self.cache_dir = cache_dir
        self.app = FastAPI()
        self._routes()

    def _routes(self) -> None:
        app = self.app

        @app.middleware("http")
        async def failures(request: Request, call_next):  # noqa: ANN001, ANN202
            if self.fail_next:
                status = self.fail_next.pop(0)
                self.requests.append({"path": request.url.path, "failed": status})
                return JSONResponse({"error": {"message": "injected", "type": "server_error"}}, status_code=status)
            return await call_next(request)

        @app.post("/v1/audio/transcriptions")
        async def transcriptions(request: Request):  # noqa: ANN202
            form = await request.form()
            upload = form["file"]
            data = await upload.read()
            self.requests.append({
                "path": request.url.path, "headers": dict(request.headers),
                "form": {k: v for k, v in form.items() if k != "file"},
                "filename": upload.filename, "content_type": upload.content_type, "bytes": len(data),
            })
            from voiceforge.providers.local import WhisperSTT

            pcm, rate = unwrap_wav(data)
            text, _ = WhisperSTT(self.cache_dir)._run(pcm, rate)
            return {"text": text.strip()}

        @app.get("/v1/models")
        async def models(request: Request):  # noqa: ANN202
            self.requests.append({"path": request.url.path, "headers": dict(request.headers)})
            return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "local"}
                                               for m in ("llama3.2:3b", "whisper-small", "kokoro")]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):  # noqa: ANN202
            body = await request.json()
            self.requests.append({"path": request.url.path, "headers": dict(request.headers), "json": body})
            step = self.chat_script.pop(0) if self.chat_script else {"text": "Okay."}
            usage = None
            if (body.get("stream_options") or {}).get("include_usage"):
                # Scripted, or counted as a stand-in tokenizer would: one token per word sent and streamed.
                sent = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
                streamed = len(step.get("text", "").split()) or 1
                usage = step.get("usage") or {"prompt_tokens": sent, "completion_tokens": streamed}
            return StreamingResponse(self._chunks(step, body.get("model", ""), usage), media_type="text/event-stream")

        @app.post("/v1/audio/speech")
        async def speech(request: Request):  # noqa: ANN202
            body = await request.json()
            self.requests.append({"path": request.url.path, "headers": dict(request.headers), "json": body})
            from voiceforge.providers.local import PiperTTS

            tts = PiperTTS()
            pcm = resample(await tts.synthesize(body["input"]), tts.sample_rate, 24000)

            async def body_iter():  # noqa: ANN202 - odd-sized pieces, as a network would cut them
                for i in range(0, len(pcm), 4097):
                    yield pcm[i : i + 4097]

            return StreamingResponse(body_iter(), media_type="audio/pcm")

    @staticmethod
    def _chunks(step: dict[str, Any], model: str, usage: dict[str, int] | None = None):  # noqa: ANN205
        def event(delta: dict[str, Any], finish: str | None = None) -> str:
            chunk = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        yield event({"role": "assistant", "content": ""})
        if "text" in step:
            words = step["text"].split(" ")
            for i, word in enumerate(words):
                yield event({"content": word if i == 0 else " " + word})
            yield event({}, "stop")
        else:
            for index, (name, args) in enumerate(step["tool_calls"]):
                yield event({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]})
                text = json.dumps(args)
                for i in range(0, len(text), 5):
                    yield event({"tool_calls": [{"index": index, "function": {"arguments": text[i : i + 5]}}]})
            yield event({}, "tool_calls")
        if usage is not None:  # the API's last chunk when stream_options.include_usage: no choices, the usage
            total = usage["prompt_tokens"] + usage["completion_tokens"]
            chunk = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [], "usage": {**usage, "total_tokens": total}}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"
