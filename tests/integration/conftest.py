"""Fixtures for integration tests: the local OpenAI-wire server, an offline engine."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.support.openai_server import OpenAIServer
from tests.support.servers import serve


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory: pytest.TempPathFactory):
    """(server, base URL) of the local OpenAI-wire server; reset its record per use."""
    from voiceforge.config import load_settings

    server = OpenAIServer(load_settings().forge_cache_dir)
    with serve(server.app) as url:
        yield server, url + "/v1"


@pytest.fixture
def oai(openai_server):
    """The local OpenAI server with an empty request log and script."""
    server, url = openai_server
    server.requests.clear()
    server.chat_script.clear()
    server.fail_next.clear()
    return server, url


@pytest.fixture(scope="module")
def offline_engine(tmp_path_factory: pytest.TempPathFactory):
    """An Engine on the offline defaults with the mock business data, one per test module."""
    from voiceforge.config import load_settings
    from voiceforge.engine import Engine

    folder = tmp_path_factory.mktemp("engine")
    engine = Engine(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'forge.db'}"))
    engine.ensure_mock_data()
    return engine


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of Debian's on a free loopback port, for this test; yields its URL."""
    server = shutil.which("redis-server")
    if not server:
        pytest.skip("redis-server not installed (apt-get install redis-server; .ci/run does)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)
