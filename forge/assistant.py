"""The Realtime commands: typed prompts through a session, and the push-to-talk assistant.

``forge --realtime --prompts "a|b"`` sends each prompt as a user message and prints the spoken
reply's transcript (``--save-audio DIR`` keeps the audio). ``forge`` with no prompt, or
``python realtime/push_to_talk.py``, is the push-to-talk assistant: ``--wav FILE`` (repeatable)
speaks files as turns; otherwise the microphone, with Enter to start and stop talking (it needs
the ``sounddevice`` package and a sound card). With OpenAI configured the session is OpenAI's
(or Azure's); with no keys Forge's offline Realtime server is started for the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from realtime.client import PCM_RATE, RealtimeClient, RealtimeTurn
from voiceforge.audio.codecs import wrap_wav
from voiceforge.audio.decode import decode_audio
from voiceforge.config import get_settings
from voiceforge.engine import Engine


@contextlib.asynccontextmanager
async def client_for(persona: str | None, server_vad: bool):  # noqa: ANN201
    """A RealtimeClient on OpenAI when configured, else on an offline server started for it."""
    settings = get_settings()
    engine = Engine(settings)
    engine.ensure_mock_data()
    if settings.openai_configured:
        async with RealtimeClient(engine, persona, server_vad=server_vad) as client:
            yield client
        return
    from forge.processes import local_realtime_server

    async with local_realtime_server() as url:
        local = settings.model_copy(update={"forge_realtime_url": url})
        engine.settings = local
        async with RealtimeClient(engine, persona, server_vad=server_vad) as client:
            yield client


def _report(turn: RealtimeTurn, as_json: bool, save: Path | None, index: int) -> None:
    out: dict[str, Any] = {"transcript": turn.user_text, "reply": turn.reply, "tool_calls": turn.tool_calls,
                           "timings_ms": turn.timings_ms, "interrupted": turn.interrupted, "error": turn.error}
    if save is not None and turn.audio:
        save.mkdir(parents=True, exist_ok=True)
        path = save / f"reply-{index}.wav"
        path.write_bytes(wrap_wav(bytes(turn.audio), PCM_RATE))
        out["audio_path"] = str(path)
    if as_json:
        print(json.dumps(out, default=str), flush=True)
        return
    print(f"you   > {turn.user_text}")
    for call in turn.tool_calls:
        print(f"tool  > {call['name']}({json.dumps(call['arguments'])})")
    print(f"agent > {turn.reply}")
    if "first_audio_delta" in turn.timings_ms:
        print(f"        first audio {turn.timings_ms['first_audio_delta']:.0f} ms after your turn ended")
    print(flush=True)


async def prompts(text: str, persona: str | None, as_json: bool, save: str | None) -> int:
    """``forge --realtime --prompts "a|b"``."""
    async with client_for(persona, server_vad=False) as client:
        for i, prompt in enumerate(p.strip() for p in text.split("|") if p.strip()):
            _report(await client.say(prompt), as_json, Path(save) if save else None, i)
    return 0


async def assistant(wavs: list[str], persona: str | None, as_json: bool, save: str | None) -> int:
    """The push-to-talk assistant: WAV files as turns, or the microphone."""
    async with client_for(persona, server_vad=False) as client:
        if wavs:
            for i, path in enumerate(wavs):
                pcm, rate = await asyncio.to_thread(decode_audio, await asyncio.to_thread(Path(path).read_bytes))
                await client.send_audio(pcm, rate)
                await client.commit()
                _report(await client.next_turn(), as_json, Path(save) if save else None, i)
            return 0
        return await _microphone(client, as_json, save)


async def _microphone(client: RealtimeClient, as_json: bool, save: str | None) -> int:
    try:
        import sounddevice  # noqa: F401 - optional: only the live microphone needs it
    except (ImportError, OSError):
        print("forge: the microphone needs the sounddevice package and a sound card; "
              "or speak files with --wav FILE", file=sys.stderr)
        return 2
    import sounddevice as sd

    loop = asyncio.get_running_loop()
    index = 0
    while True:
        line = await asyncio.to_thread(input, "Enter to talk (q to quit) ")
        if line.strip().lower() == "q":
            return 0
        chunks: list[bytes] = []
        with sd.RawInputStream(samplerate=PCM_RATE, channels=1, dtype="int16",
                               callback=lambda data, *_, got=chunks: loop.call_soon_threadsafe(got.append, bytes(data))):
            await asyncio.to_thread(input, "… talking; Enter to stop ")
        await client.send_audio(b"".join(chunks), PCM_RATE)
        await client.commit()
        turn = await client.next_turn()
        _report(turn, as_json, Path(save) if save else None, index)
        if turn.audio:
            sd.play(memoryview(bytes(turn.audio)).cast("h"), PCM_RATE, blocking=False)
        index += 1
