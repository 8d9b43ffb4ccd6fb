"""``forge call-sim`` and ``forge device-sim``: the simulators run against a sidecar, their turns printed.

The simulators themselves are clients in the core (voiceforge/telephony/simulator.py speaks
Twilio's media stream, voiceforge/devices/simulator.py the ESP32's protocol); this module gives
them a sidecar (``--url``, or one started for the run) and prints what they heard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from forge.processes import local_sidecar
from voiceforge.audio.codecs import ulaw_to_pcm16, wrap_wav
from voiceforge.audio.decode import decode_audio
from voiceforge.config import get_settings
from voiceforge.devices.simulator import simulate_device, simulate_http_press
from voiceforge.telephony.simulator import simulate_call


async def _read(paths: list[str]) -> list[tuple[bytes, int]]:
    return [await asyncio.to_thread(decode_audio, await asyncio.to_thread(Path(p).read_bytes)) for p in paths]


async def call_sim(args: argparse.Namespace) -> int:
    """`forge call-sim`: run a call against ``--url``, or a sidecar started for it on a free port."""
    settings = get_settings()
    utterances = await _read(args.wavs)
    persona = getattr(args, "persona", None)
    if args.url:
        if not settings.twilio_auth_token:
            raise SystemExit("forge call-sim --url needs TWILIO_AUTH_TOKEN (the sidecar's) to sign requests")
        result = await simulate_call(args.url, settings.twilio_auth_token, utterances, persona, args.barge_in_ms,
                                     api_key=settings.api_key)
    else:
        async with local_sidecar() as (base, token, key):
            result = await simulate_call(base, token, utterances, persona, args.barge_in_ms, api_key=key)
    audio = result.pop("_audio")
    if args.save_audio:
        await asyncio.to_thread(_save_audio, Path(args.save_audio), result["turns"], audio)
    if getattr(args, "json", False):
        for turn in result["turns"]:
            print(json.dumps({"call_sid": result["call_sid"], **turn}, default=str))
    else:
        print(f"call {result['call_sid']} ({result['status']}), greeting: {result['greeting_ms'] / 1000:.1f} s of audio")
        for turn in result["turns"]:
            print(f"caller > {turn['transcript']}")
            for call in turn["tool_calls"]:
                print(f"tool   > {call['name']}({json.dumps(call['arguments'])})")
            print(f"agent  > {turn['reply']}" + ("  [interrupted]" if turn["interrupted"] else ""))
            print(f"         first agent audio {turn['latency_ms']} ms after the caller stopped\n")
    return 0


def _save_audio(folder: Path, turns: list[dict[str, Any]], audio: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for turn, ulaw in zip(turns, audio, strict=True):
        path = folder / f"turn-{turn['index']}.wav"
        path.write_bytes(wrap_wav(ulaw_to_pcm16(ulaw), 8000))
        turn["audio_path"] = str(path)


async def device_sim(args: argparse.Namespace) -> int:
    """`forge device-sim`: presses against ``--url`` with ``--token``, or a local sidecar and a fresh device."""
    utterances = await _read(args.wavs)
    if args.url:
        if not args.token:
            raise SystemExit("forge device-sim --url needs --token (the device's)")
        result = await _presses(args, args.url, args.token, utterances)
    else:
        async with local_sidecar() as (base, _, key):
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
                r = await http.post(base + "/api/devices", json={"name": "device-sim",
                                                                "persona": args.persona or "hanuman_storyteller"})
                r.raise_for_status()
            result = await _presses(args, base, r.json()["token"], utterances)
    if args.save_audio:
        folder = Path(args.save_audio)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        for turn, audio in zip(result["turns"], result["_audio"], strict=True):
            path = folder / f"reply-{turn['turn']}.wav"
            await asyncio.to_thread(path.write_bytes, wrap_wav(audio, result["rate"]))
            turn["audio_path"] = str(path)
    for turn in result["turns"]:
        if args.json:
            print(json.dumps({"device": result.get("device"), **turn}, default=str))
        else:
            print(f"child  > {turn['transcript']}")
            for name in turn["tool_calls"]:
                print(f"tool   > {name}")
            print(f"device > {turn['reply']}")
            print(f"         first reply audio {turn['latency_ms']} ms after release\n")
    return 0


async def _presses(args: argparse.Namespace, base: str, token: str, utterances: list[tuple[bytes, int]]) -> dict[str, Any]:
    if not args.http:
        return await simulate_device(base, token, utterances, rate=args.rate)
    turns, audio = [], []
    for number, (pcm, source_rate) in enumerate(utterances, start=1):
        one = await simulate_http_press(base, token, pcm, source_rate, rate=args.rate, turn=number)
        audio.append(one.pop("_audio", b""))
        turns.append(one)
    return {"device": None, "rate": args.rate, "turns": turns, "_audio": audio}
