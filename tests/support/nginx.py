"""Debian's nginx on loopback, configured by deploy/nginx/forge.conf with its upstream and port replaced."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "forge.conf"


def render(upstreams: list[str], port: int) -> str:
    """deploy/nginx/forge.conf with ``upstreams`` (host:port) as the sidecars and ``port`` to listen on.

    Raises:
        ValueError: the file no longer has the upstream block or the listen line this replaces.
    """
    text = CONF.read_text()
    servers = "".join(f"    server {u} max_fails=2 fail_timeout=5s;\n" for u in upstreams)
    text, n = re.subn(r"(upstream forge_sidecars \{\n    least_conn;\n)(?:    server [^\n]+\n)+", r"\g<1>" + servers, text)
    text, m = re.subn(r"listen \d+;", f"listen 127.0.0.1:{port};", text)
    if n != 1 or m != 1:
        raise ValueError(f"{CONF} has no upstream block or listen line to replace")
    return text


@contextlib.contextmanager
def nginx(upstreams: list[str], folder: Path, port: int | None = None) -> Iterator[str]:
    """Run nginx in front of ``upstreams`` on ``port`` (default: a free one) until the block ends; yields its base URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        import pytest

        pytest.skip("nginx not installed (apt-get install nginx; .ci/run does)")
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "forge.conf").write_text(render(upstreams, port))
    user = "user root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  fastcgi_temp_path {folder}/fcgi;\n  uwsgi_temp_path {folder}/uwsgi;\n  scgi_temp_path {folder}/scgi;\n"
        f"  include {folder}/forge.conf;\n}}\n")
    proc = subprocess.Popen([binary, "-c", str(folder / "nginx.conf"), "-p", str(folder), "-g", "daemon off;"],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError("nginx did not start: " + proc.stderr.read().decode(errors="replace")[-1500:])
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not listen in time")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
