"""Fixtures for integration tests: the local OpenAI-wire server, an offline engine."""

from __future__ import annotations

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
