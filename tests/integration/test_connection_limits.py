"""Connections bounded as the internet would test them: raw sockets from several loopback addresses.

The sidecar runs under uvicorn exactly as ``forge serve`` runs it (``server.serving``), with
short deadlines so the test is quick. Linux routes all of 127.0.0.0/8 to loopback, so a socket
bound to 127.0.0.2 is, to the sidecar, a different client from one bound to 127.0.0.1; 127.0.0.4
plays a trusted reverse proxy.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from server.main import create_app
from tests.support.servers import free_port, serve
from voiceforge.config import load_settings

pytestmark = pytest.mark.integration

KEY = "connection-limits-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PER_ADDRESS = 8
DEADLINE_S = 1.5
MAX_CONNECTIONS = 60
PROXY = "127.0.0.4"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    settings = load_settings(
        forge_api_key=KEY, forge_data_dir=folder, database_url=f"sqlite:///{folder / 'c.db'}",
        twilio_auth_token="limits-twilio-token", public_base_url="https://forge.example.test",
        forge_max_unauthenticated_per_address=PER_ADDRESS, forge_max_connections=MAX_CONNECTIONS,
        forge_header_timeout_s=DEADLINE_S, forge_first_message_s=DEADLINE_S, forge_body_idle_s=DEADLINE_S,
        forge_max_upload_mb=0.2, forge_trusted_proxies=PROXY)
    app = create_app(settings, roles=("sidecar", "realtime"))
    port = free_port()
    with serve(app, port=port):
        yield port, app


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def answer(reader: asyncio.StreamReader, within_s: float = 5.0) -> tuple[int, bytes]:
    """(status, the whole answer) of a raw HTTP exchange; status 0 if the server closed without one."""
    data = await asyncio.wait_for(reader.read(65536), within_s)
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    return int(data[9:12]), data


async def health(port: int) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    return time.monotonic() - started


async def test_slow_headers_are_closed_and_one_address_cannot_hold_many(sidecar):
    port, _ = sidecar
    slow = []
    for _ in range(PER_ADDRESS):
        reader, writer = await connect(port, "127.0.0.2")
        writer.write(b"GET /health HTTP/1.1\r\nHost: forge\r\n")  # and never the blank line
        slow.append((reader, writer))
    await asyncio.sleep(0.2)
    reader, writer = await connect(port, "127.0.0.2")
    status, text = await answer(reader)
    assert status == 429 and b"retry-after: 1" in text.lower(), text  # refused at once, not queued
    writer.close()
    assert await health(port) < 1.0  # another address is served meanwhile
    started = time.monotonic()
    for _, writer in slow:  # a header line now and then does not keep a connection alive
        writer.write(b"X-Slow: 1\r\n")
    results = await asyncio.gather(*(answer(reader, 10) for reader, _ in slow))
    assert [status for status, _ in results] == [408] * PER_ADDRESS, results
    assert time.monotonic() - started < DEADLINE_S + 1.0
    for _, writer in slow:
        writer.close()
    reader, writer = await connect(port, "127.0.0.2")  # its share is free again
    writer.write(b"GET /health HTTP/1.1\r\nHost: forge\r\nConnection: close\r\n\r\n")
    assert (await answer(reader))[0] == 200
    writer.close()


async def test_the_global_cap_refuses_with_503_and_recovers(sidecar):
    port, _ = sidecar
    held = []
    for n in range(MAX_CONNECTIONS):  # silent connections from many addresses
        held.append(await connect(port, f"127.0.1.{1 + n // PER_ADDRESS}"))
    await asyncio.sleep(0.2)
    reader, writer = await connect(port, "127.0.0.3")
    status, text = await answer(reader)
    assert status == 503 and b"connection limit" in text, text
    writer.close()
    await asyncio.gather(*(answer(r, 10) for r, _ in held))  # each closed by the header deadline
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)
    assert await health(port) < 1.0


async def test_no_key_means_401_before_the_body(sidecar):
    port, _ = sidecar

    at_once = asyncio.Semaphore(MAX_CONNECTIONS // 2)

    async def declare_a_body(n: int) -> tuple[int, float]:
        async with at_once:
            return await one(n)

    async def one(n: int) -> tuple[int, float]:
        started = time.monotonic()
        reader, writer = await connect(port, f"127.0.2.{1 + n % 25}")
        key = "" if n % 2 else "Authorization: Bearer wrong-key\r\n"
        writer.write(f"POST /api/call HTTP/1.1\r\nHost: forge\r\n{key}Content-Type: application/json\r\n"
                     f"Content-Length: 150000\r\n\r\n".encode())  # under the 200 KB limit, and never sent
        status, _ = await answer(reader)
        writer.close()
        return status, time.monotonic() - started

    results = await asyncio.gather(*(declare_a_body(n) for n in range(200)))
    assert {status for status, _ in results} == {401}, results
    assert max(seconds for _, seconds in results) < 5
    reader, writer = await connect(port, "127.0.0.5")  # a key, but a body over the limit: 413 unread
    writer.write(f"POST /api/call HTTP/1.1\r\nHost: forge\r\nAuthorization: Bearer {KEY}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n".encode())
    assert (await answer(reader))[0] == 413
    writer.close()
    reader, writer = await connect(port, "127.0.0.5")  # a webhook with no signature: 403 unread
    writer.write(b"POST /twilio/sms HTTP/1.1\r\nHost: forge\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: 50000\r\n\r\n")
    assert (await answer(reader))[0] == 403
    writer.close()
    reader, writer = await connect(port, "127.0.0.5")  # signed, but a webhook's cap is 64 KiB: 413 unread
    writer.write(b"POST /twilio/sms HTTP/1.1\r\nHost: forge\r\nX-Twilio-Signature: abc\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n")
    assert (await answer(reader))[0] == 413
    writer.close()


async def test_bodies_are_bounded_in_size_and_time(sidecar):
    port, _ = sidecar
    base = f"http://127.0.0.1:{port}"

    async def pieces(*chunks: bytes, pause: float = 0.0):  # noqa: ANN202 - a chunked body
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(pause)

    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as http:
        big = b'{"to": "' + b"1" * 300_000 + b'"}'  # chunked, so no Content-Length to judge by
        r = await http.post("/api/call", content=pieces(big[:150_000], big[150_000:]),
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text  # not the JSON parser's 400
        started = time.monotonic()
        r = await http.post("/api/call", content=pieces(b'{"to": ', b'"+15550000001"}', pause=DEADLINE_S + 1),
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 408 and "paused" in r.json()["detail"], r.text
        assert time.monotonic() - started < 10  # (httpx reads the answer only once it has sent the whole body)


async def test_idle_websockets_are_closed_and_counted(sidecar):
    port, _ = sidecar
    ws_url = f"ws://127.0.0.1:{port}"
    sockets = [await websockets.connect(f"{ws_url}/ws", additional_headers=AUTH) for _ in range(20)]
    sockets.append(await websockets.connect(f"{ws_url}/v1/realtime", additional_headers=AUTH))
    talking = await websockets.connect(f"{ws_url}/ws", additional_headers=AUTH)
    await talking.send(json.dumps({"type": "start", "sample_rate": 16000}))
    assert json.loads(await asyncio.wait_for(talking.recv(), 10))["type"] == "ready"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as http:
        status = (await http.get("/ws/status")).json()
        assert status["sockets_open"] == 22 and status["sockets_silent"] == 21 and status["active"] == 1, status
        for ws in sockets:
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), DEADLINE_S + 5)
            assert ws.close_code == 1008 and "no message within" in ws.close_reason
        status = (await http.get("/ws/status")).json()
        assert status["sockets_open"] == 1 and status["sockets_silent"] == 0 and status["active"] == 1, status
    await talking.close()


async def test_forwarded_for_is_believed_only_from_the_trusted_proxy(sidecar):
    port, _ = sidecar
    held = []

    async def hold_a_webhook(source: str, client: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A signed-looking webhook whose body is slow to come: unauthenticated until answered."""
        reader, writer = await connect(port, source)
        writer.write(f"POST /twilio/sms HTTP/1.1\r\nHost: forge\r\nX-Twilio-Signature: abc\r\n"
                     f"X-Forwarded-For: {client}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     f"Content-Length: 100\r\n\r\nFrom=".encode())
        held.append((reader, writer))
        return reader, writer

    try:
        for _ in range(PER_ADDRESS):  # behind the trusted proxy: all from one client...
            await hold_a_webhook(PROXY, "203.0.113.7")
        for n in range(PER_ADDRESS):  # ...and, not through it, from many "clients" of one address
            await hold_a_webhook("127.0.0.6", f"198.51.100.{n}")
        await asyncio.sleep(0.3)
        reader, _ = await hold_a_webhook(PROXY, "203.0.113.7")
        assert (await answer(reader))[0] == 429  # that client has its share
        reader, _ = await hold_a_webhook("127.0.0.6", "198.51.100.200")
        assert (await answer(reader))[0] == 429  # a made-up X-Forwarded-For earns nothing
        reader, writer = await hold_a_webhook(PROXY, "203.0.113.8")  # another client behind the proxy
        writer.write(b"x" * 95)
        assert (await answer(reader))[0] == 403  # served (its signature is wrong, which it finds after the body)
    finally:
        for _, writer in held:
            writer.close()
