"""A sidecar on a free loopback port in this process, for a simulated call or press from the app.

The core's simulators (``voiceforge/telephony/simulator.py``, ``voiceforge/devices/simulator.py``)
are only clients; this is the server side the Phone & SMS and Devices pages start for them
(``forge call-sim`` starts ``forge serve`` in its own process instead: forge/processes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import uvicorn

from forge.processes import free_port
from server.main import create_app
from server.serving import uvicorn_config
from voiceforge.config import Settings, get_settings
from voiceforge.telephony.simulator import simulate_call


@contextlib.asynccontextmanager
async def in_process_sidecar(settings: Settings | None = None, port: int | None = None):  # noqa: ANN201
    """Serve the sidecar on loopback in this process (``port`` or a free one), models loaded; yields (app, URL)."""
    port = port or free_port()
    app = create_app(settings or get_settings())
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise RuntimeError("the sidecar did not start")
        await asyncio.sleep(0.05)
    try:
        await app.state.warm
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run_local(utterances: list[tuple[bytes, int]], persona: str | None = None,
                    barge_in_ms: int | None = None, progress: Any = None) -> dict[str, Any]:
    """Start a sidecar on a free loopback port (this machine's settings) and simulate one call on it.

    Args:
        utterances: caller speech, each (PCM16 mono, Hz).
        persona: the persona to answer with.
        barge_in_ms: barge in this many ms into each reply after the first utterance.
        progress: :func:`simulate_call`'s progress callback.

    Returns:
        What :func:`simulate_call` returns.
    """
    token = get_settings().twilio_auth_token or secrets.token_hex(16)
    # Twilio signs the public URL, so the sidecar is told it is reachable at its own address.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = get_settings().model_copy(update={"public_base_url": base, "twilio_auth_token": token})
    async with in_process_sidecar(settings, port) as (app, url):
        return await simulate_call(url, token, utterances, persona, barge_in_ms, api_key=app.state.api_key,
                                   progress=progress)


async def run_local_device_press(utterances: list[tuple[bytes, int]], persona: str, child_id: int | None,
                                 progress: Any = None) -> dict[str, Any]:
    """Start a sidecar in this process and press the simulator device for ``child_id`` once per utterance.

    The press goes over the real device protocol and is remembered for the child like any
    other. The one simulator device (``voiceforge.store.devices.SIMULATOR_DEVICE``) is registered on the first press,
    given ``persona`` and ``child_id`` and a fresh token for each press, and revoked after it.

    Args:
        utterances: the child's speech, each (PCM16 mono, Hz).
        persona: the persona the device answers with.
        child_id: the child the device belongs to, or None.
        progress: called (from the event loop) with ``{"event": "sidecar"}`` once the models are
            warm, then :func:`voiceforge.devices.simulator.simulate_device`'s events.

    Returns:
        What :func:`voiceforge.devices.simulator.simulate_device` returns.
    """
    from voiceforge.devices.simulator import simulate_device
    from voiceforge.store import devices as store
    from voiceforge.store.devices import SIMULATOR_DEVICE

    def ready_device(db: Any) -> str:
        if store.get_device(db, SIMULATOR_DEVICE) is None:
            store.register_device(db, "simulated presses", persona, child_id, device_id=SIMULATOR_DEVICE)
        device = store.get_device(db, SIMULATOR_DEVICE)
        changes: dict[str, Any] = {"persona": persona}
        if device["child_id"] != child_id:
            changes["child_id"] = child_id
        store.update_settings(db, SIMULATOR_DEVICE, **changes)
        return store.rotate_token(db, SIMULATOR_DEVICE)[1]

    async with in_process_sidecar() as (app, base):
        db = app.state.engine.db
        if progress is not None:
            progress({"event": "sidecar"})
        token = await asyncio.to_thread(ready_device, db)
        try:
            return await simulate_device(base, token, utterances, progress=progress)
        finally:
            await asyncio.to_thread(store.revoke_device, db, SIMULATOR_DEVICE)
