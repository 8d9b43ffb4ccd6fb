"""Forge's own servers in child processes: a sidecar or a Realtime server on a free loopback port.

The simulators and `forge compare` start them the way a user would (``forge serve``,
``forge realtime-server``) and wait until ``/ready`` says the models are loaded; ``forge up``
(``make run``) starts the sidecar, the app and the offline Realtime server together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from voiceforge.config import get_settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def forge_command(*args: str) -> list[str]:
    """The argv that runs ``forge ARGS`` with this interpreter (no console script needed)."""
    return [sys.executable, "-m", "forge", *args]


@contextlib.asynccontextmanager
async def _child(command: list[str], env: dict[str, str], base: str, what: str,
                 timeout_s: float) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``command`` until the block ends (yields its process); wait first until ``base + /ready`` answers 200.

    Raises:
        RuntimeError: the child exited (its last stderr lines are in the message) or was not
            ready within ``timeout_s``.
    """
    errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks on it
    proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=errors)
    try:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if proc.returncode is not None:
                    errors.seek(0)
                    raise RuntimeError(f"the {what} did not start:\n"
                                       + errors.read().decode(errors="replace")[-2000:])
                try:
                    if (await http.get(base + "/ready")).status_code == 200:
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {what} did not get ready in time")
                await asyncio.sleep(0.2)
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        errors.close()


def _same_data(settings: Any) -> dict[str, str]:
    """Environment that gives a child process ``settings``' data folder and database."""
    env = {"FORGE_DATA_DIR": str(settings.forge_data_dir)}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return env


class SidecarProcess(tuple):
    """What :func:`local_sidecar` yields: ``(base URL, Twilio token, API key)``, and ``.process``."""

    def __new__(cls, base: str, token: str, key: str, process: asyncio.subprocess.Process) -> SidecarProcess:
        out = super().__new__(cls, (base, token, key))
        out.process = process
        return out


@contextlib.asynccontextmanager
async def local_sidecar(timeout_s: float = 180.0, settings: Any = None,
                        **extra: str) -> AsyncIterator[SidecarProcess]:
    """Start ``forge serve`` on a free loopback port for a simulator; yields (URL, Twilio token, API key),
    whose ``.process`` is the child (to signal it).

    The sidecar runs with ``settings``' data folder and database (default: this process's
    settings), its API key, a throwaway Twilio auth token (unless one is set) and PUBLIC_BASE_URL
    and FORGE_SIDECAR_URL pointing at itself (an agent's HTTP tool may call it), then ``extra``
    environment, which wins (``FORGE_NOW`` for an eval's fixed clock; ``PUBLIC_BASE_URL`` of a load
    balancer in front); it is stopped on exit.
    """
    settings = settings or get_settings()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token = settings.twilio_auth_token or secrets.token_hex(16)
    key, _ = settings.ensure_api_key()
    env = {**os.environ, **_same_data(settings), "PUBLIC_BASE_URL": base, "TWILIO_AUTH_TOKEN": token,
           "FORGE_API_KEY": key, "FORGE_SIDECAR_URL": base, **extra}
    async with _child(forge_command("serve", "--port", str(port)), env, base, "local sidecar", timeout_s) as proc:
        yield SidecarProcess(base, token, key, proc)


@contextlib.asynccontextmanager
async def local_model_host(timeout_s: float = 180.0, settings: Any = None, workers: int = 1,
                           **extra: str) -> AsyncIterator[SidecarProcess]:
    """Start ``forge serve-models`` on a free loopback port with ``settings``' data folder and API key;
    yields (``http://…/v1`` base URL, "", API key) with ``.process``."""
    settings = settings or get_settings()
    port = free_port()
    key, _ = settings.ensure_api_key()
    env = {**os.environ, **extra, **_same_data(settings), "FORGE_API_KEY": key}
    async with _child(forge_command("serve-models", "--port", str(port), "--workers", str(workers)), env,
                      f"http://127.0.0.1:{port}", "model host", timeout_s) as proc:
        yield SidecarProcess(f"http://127.0.0.1:{port}/v1", "", key, proc)


@contextlib.asynccontextmanager
async def local_realtime_server(timeout_s: float = 180.0, settings: Any = None, **extra: str) -> AsyncIterator[str]:
    """Start ``forge realtime-server`` on a free loopback port with ``settings``' data folder, database
    and API key (default: this process's) and ``extra`` environment; yields its ``ws://…/v1`` base URL."""
    settings = settings or get_settings()
    port = free_port()
    key, _ = settings.ensure_api_key()
    env = {**os.environ, **extra, **_same_data(settings), "FORGE_API_KEY": key}
    async with _child(forge_command("realtime-server", "--port", str(port)), env, f"http://127.0.0.1:{port}",
                      "Realtime server", timeout_s):
        yield f"ws://127.0.0.1:{port}/v1"


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def app_login_configured(settings: object) -> bool:
    """Whether the app has a login: ``FORGE_APP_PASSWORD``, or ``[auth]`` in a ``.streamlit/secrets.toml``
    that Streamlit reads (the project's or the user's)."""
    import tomllib

    from voiceforge.config import ROOT

    if getattr(settings, "forge_app_password", None):
        return True
    for path in (ROOT / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"):
        try:
            if "auth" in tomllib.loads(path.read_text()):
                return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


def _answers_ready(base: str) -> bool:
    """``base + /ready`` answers 200 (models loaded, greetings synthesized)."""
    try:
        return httpx.get(base + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def up(args: argparse.Namespace) -> int:
    """Run the sidecar, Streamlit and the offline Realtime server as child processes; one Ctrl-C stops all.

    Each child runs in its own process group, so the terminal's Ctrl-C reaches only this process, which
    then asks each child once (SIGINT), waits, and kills what is left after 15 s.
    """
    import subprocess

    from voiceforge.config import ROOT

    settings = get_settings()
    if args.bind not in LOOPBACK and not app_login_configured(settings):
        print(f"Forge will not serve the app on {args.bind} without a login: set FORGE_APP_PASSWORD (or Streamlit's "
              "OIDC login, [auth] in .streamlit/secrets.toml), or use --bind 127.0.0.1.", file=sys.stderr, flush=True)
        return 2
    sidecar_url = f"http://127.0.0.1:{args.sidecar_port}"
    env = {**os.environ, "FORGE_SIDECAR_URL": sidecar_url}
    if not settings.openai_configured:  # speech-to-speech then runs on Forge's own Realtime server
        env["FORGE_REALTIME_URL"] = f"ws://127.0.0.1:{args.realtime_port}/v1"
    children = [
        subprocess.Popen(forge_command("serve", "--host", args.bind, "--port", str(args.sidecar_port)), env=env, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                          "--server.address", args.bind, "--server.port", str(args.app_port),
                          "--browser.gatherUsageStats", "false"], env=env, cwd=ROOT, start_new_session=True),
    ]
    if not settings.openai_configured:
        children.append(subprocess.Popen(forge_command("realtime-server", "--host", "127.0.0.1",
                                                       "--port", str(args.realtime_port)), env=env,
                                         start_new_session=True))
    print(f"Forge: app on http://127.0.0.1:{args.app_port}, sidecar on {sidecar_url} (Ctrl-C stops them)\n"
          f"API key: {settings.api_key_path if not settings.forge_api_key else 'FORGE_API_KEY'}", flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ready = False
    while not stopping and all(c.poll() is None for c in children):
        if not ready and (ready := _answers_ready(sidecar_url)):
            print("Forge is ready: models loaded, greetings synthesized.", flush=True)
        time.sleep(0.2 if ready else 0.5)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    print("Forge stopped.", flush=True)
    return 0 if stopping else 1
