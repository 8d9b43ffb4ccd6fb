"""A sidecar of this machine's settings in its own process, for the simulators' local runs.

The core does not import the sidecar (``server/``); it starts it the way a user would, with
``forge serve`` on a free loopback port, and waits until its models are loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import httpx


@contextlib.asynccontextmanager
async def local_sidecar(timeout_s: float = 180.0):  # noqa: ANN201
    """Start ``forge serve`` on a free loopback port for a simulator; yields (URL, Twilio token, API key).

    The sidecar runs in its own process with this machine's settings and data folder, plus a
    throwaway Twilio auth token (unless one is set) and PUBLIC_BASE_URL pointing at itself; it
    is stopped on exit.
    """
    import os
    import signal
    import socket
    import sys
    import tempfile

    from voiceforge.config import get_settings

    settings = get_settings()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    token = settings.twilio_auth_token or secrets.token_hex(16)
    key, _ = settings.ensure_api_key()
    env = {**os.environ, "PUBLIC_BASE_URL": base, "TWILIO_AUTH_TOKEN": token, "FORGE_API_KEY": key,
           "FORGE_DATA_DIR": str(settings.forge_data_dir)}
    errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks on it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiceforge.cli", "serve", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=errors)
    try:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if proc.returncode is not None:
                    errors.seek(0)
                    err = errors.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the local sidecar did not start:\n{err}")
                try:
                    if (await http.get(base + "/health")).json().get("models_ready"):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the local sidecar did not get ready in time")
                await asyncio.sleep(0.2)
        yield base, token, key
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        errors.close()


@contextlib.asynccontextmanager
async def local_realtime_server(timeout_s: float = 180.0):  # noqa: ANN201
    """Start ``forge realtime-server`` on a free loopback port; yields its ``ws://…/v1`` base URL."""
    import os
    import signal
    import socket
    import sys
    import tempfile

    from voiceforge.config import get_settings

    settings = get_settings()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key, _ = settings.ensure_api_key()
    env = {**os.environ, "FORGE_API_KEY": key, "FORGE_DATA_DIR": str(settings.forge_data_dir)}
    errors = tempfile.TemporaryFile()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiceforge.cli", "realtime-server", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=errors)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if proc.returncode is not None:
                    errors.seek(0)
                    raise RuntimeError("the Realtime server did not start:\n" + errors.read().decode(errors="replace")[-2000:])
                try:
                    if (await http.get(base + "/health")).json().get("models_ready"):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the Realtime server did not get ready in time")
                await asyncio.sleep(0.2)
        yield f"ws://127.0.0.1:{port}/v1"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        errors.close()
