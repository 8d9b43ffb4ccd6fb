"""The Live page in Chromium: a hands-free spoken conversation over WebRTC, with a barge-in.

Chromium's fake microphone plays one WAV once (``%noloop``): a pause for the greeting, a
question, a pause for its answer, a request the offline brain answers at length, and — while
that long answer is playing — a second question spoken over it. The page must show the live
transcript and state, the long answer marked interrupted, and the second question answered;
the stored conversation must agree. An analyser on the page's remote audio track proves the
agent's audio really went silent within a moment of the barge-in.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.browser.test_pages_in_chromium import ARTIFACTS, CHROMIUM, ROOT
from tests.support.servers import free_port
from voiceforge.audio.codecs import wrap_wav
from voiceforge.audio.resample import resample

pytestmark = pytest.mark.browser
RATE = 48000

# Measures the level of the agent audio the page receives, every 50 ms, into window.forgeLevels.
LEVEL_PROBE = """
() => {
  const audio = document.querySelector('audio');
  if (!audio || !audio.srcObject || window.forgeLevels) return !!window.forgeLevels;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  window.forgeLevels = [];
  setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0; for (const v of buf) sum += v * v;
    window.forgeLevels.push([performance.now(), Math.sqrt(sum / buf.length)]);
  }, 50);
  return true;
}
"""


def microphone(speak, folder: Path) -> tuple[Path, float]:
    """The fake microphone's WAV at 48 kHz, and the second at which the barge-in starts."""
    def say(text: str) -> bytes:
        pcm, rate = speak(text)
        return resample(pcm, rate, RATE)

    def pause(seconds: float) -> bytes:
        return np.zeros(int(RATE * seconds), dtype="<i2").tobytes()

    parts = [pause(7.0), say("How many customers are there?"), pause(9.0),
             say("Tell me a joke about the weather."), pause(5.0)]
    barge_in_at = sum(len(p) for p in parts) / 2 / RATE
    parts += [say("How many customers are there?"), pause(20.0)]
    path = folder / "live-mic.wav"
    path.write_bytes(wrap_wav(b"".join(parts), RATE))
    return path, barge_in_at


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    folder = tmp_path_factory.mktemp("live")
    port = free_port()
    env = {**os.environ, "FORGE_DATA_DIR": str(folder / "data"), "FORGE_SIDECAR_URL": "http://127.0.0.1:9",
           "FORGE_PERSONA": "friendly_guide"}
    log = (folder / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
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
                pytest.fail("streamlit did not start")
            time.sleep(0.3)
        yield base, folder
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_live_page_holds_a_spoken_conversation_with_barge_in(live_app, speak):
    from playwright.sync_api import expect, sync_playwright

    base, folder = live_app
    mic, barge_in_at = microphone(speak, folder)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        ])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(base + "/live")
            component = page.frame_locator("iframe[title='streamlit_webrtc.component.webrtc_streamer']")
            start = component.get_by_role("button", name="START")
            start.wait_for(timeout=60_000)
            start.click()
            started = time.monotonic()
            expect(page.get_by_text("State:")).to_be_visible(timeout=30_000)
            frame = next(f for f in page.frames if "webrtc" in (f.name + f.url) or f != page.main_frame)
            deadline = time.monotonic() + 30
            while not frame.evaluate(LEVEL_PROBE):
                assert time.monotonic() < deadline, "no remote audio track on the page"
                time.sleep(0.2)

            chat = page.get_by_test_id("stChatMessage")
            expect(chat.filter(has_text="40").first).to_be_visible(timeout=90_000)
            expect(chat.filter(has_text="customers").first).to_be_visible()
            expect(chat.filter(has_text="interrupted")).to_have_count(1, timeout=90_000)
            expect(chat.filter(has_text="40")).to_have_count(2, timeout=90_000)
            expect(page.get_by_text("Voice-to-voice p50")).to_be_visible(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "live.png"), full_page=True)
            levels = frame.evaluate("window.forgeLevels")
        finally:
            browser.close()

    # The stored conversation agrees: three turns, the middle one interrupted and stored as heard.
    db = sqlite3.connect(folder / "data" / "forge.db")
    turns = db.execute("SELECT user_text, assistant_text, interrupted FROM turns ORDER BY id").fetchall()
    assert len(turns) == 3, turns
    assert "customers" in turns[0][0].lower() and "40" in turns[0][1]
    assert "joke" in turns[1][0].lower() and turns[1][2]
    assert "40" in turns[2][1]
    # The agent's audio went quiet soon after the user started talking over it.
    assert levels and max(v for _, v in levels) > 0.01, "no agent audio reached the page"
    print(f"barge-in at {barge_in_at:.1f} s of microphone audio; {len(levels)} level samples; started {started}")
