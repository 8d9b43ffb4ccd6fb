"""The Streamlit app as a real process on a free loopback port, for the Chromium tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def streamlit_app(folder: Path, address: str = "127.0.0.1", **env: str) -> Iterator[str]:
    """Run ``streamlit run app.py`` on ``address`` with its data in ``folder`` (and ``env`` added); yields the base URL.

    The sidecar URL points at a closed port (the pages say "down"); the app's output goes to
    ``folder/streamlit.log``. Fails the test if the app is not healthy within 60 s.
    """
    port = free_port()
    full = {**os.environ, "FORGE_DATA_DIR": str(folder / "data"), "FORGE_SIDECAR_URL": "http://127.0.0.1:9", **env}
    with (folder / "streamlit.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
             "--server.address", address, "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(base + "/_stcore/health", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"streamlit did not start (see {folder / 'streamlit.log'})")
                time.sleep(0.3)
            yield base
        finally:
            proc.terminate()
            proc.wait(10)
