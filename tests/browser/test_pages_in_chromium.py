"""The app in a real browser: Debian's Chromium driven by Playwright, with a fake microphone.

The microphone plays a Piper WAV (Chromium's --use-file-for-fake-audio-capture); the test
records with the real st.audio_input on Voice Chat and waits for the transcript, the reply,
the reply audio element and the latency waterfall. A screenshot of every page goes to
test-artifacts/.
"""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.streamlit_app import streamlit_app as run_streamlit
from voiceforge.audio.codecs import wrap_wav
from voiceforge.audio.resample import resample

pytestmark = [pytest.mark.browser, pytest.mark.wallclock]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PAGES = ["home", "voice-chat", "compare", "tools", "phone", "devices", "conversations", "personas"]
"""Pages screenshotted here (the Live page has its own test, which leaves live.png)."""


@pytest.fixture(scope="module")
def streamlit_app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    folder = tmp_path_factory.mktemp("browser")
    with run_streamlit(folder) as base:
        yield base, folder


def fake_microphone_wav(speak, folder: Path) -> Path:
    """0.5 s silence, the request, 4 s silence, at 48 kHz (Chromium's capture rate)."""
    pcm, rate = speak("How many customers are there?")
    speech = resample(pcm, rate, 48000)
    silence = np.zeros(48000 // 2, dtype="<i2").tobytes()
    path = folder / "mic.wav"
    path.write_bytes(wrap_wav(silence + speech + silence * 8, 48000))
    return path


def settled(page, timeout_s: float = 20.0) -> None:  # noqa: ANN001
    """Wait until the page's script has run: the same elements for 0.6 s, and no skeletons (or 6 s)."""
    started = time.monotonic()
    last = -1
    while time.monotonic() < started + timeout_s:
        count = page.locator("[data-testid='stElementContainer']").count()
        quiet = page.get_by_test_id("stSkeleton").count() == 0 or time.monotonic() - started > 6
        if count > 1 and count == last and quiet:
            return
        last = count
        page.wait_for_timeout(600)


def test_record_on_voice_chat_and_screenshot_every_page(streamlit_app, speak):
    from playwright.sync_api import expect, sync_playwright

    base, folder = streamlit_app
    mic = fake_microphone_wav(speak, folder)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}",
        ])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base + "/voice-chat")
            record = page.get_by_test_id("stAudioInputActionButton")
            record.wait_for(timeout=60_000)
            record.click()
            page.wait_for_timeout(3500)  # the fake microphone plays the request
            page.get_by_test_id("stAudioInputActionButton").click()  # stop
            chat = page.get_by_test_id("stChatMessage")
            expect(chat.filter(has_text="The answer is 40.")).to_be_visible(timeout=120_000)
            expect(chat.filter(has_text="customers").first).to_be_visible()
            expect(page.locator("audio").last).to_be_attached()
            expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "voice-chat.png"), full_page=True)
            for name in PAGES:
                if name == "voice-chat":
                    continue
                page.goto(f"{base}/" + ("" if name == "home" else name))  # Home is the default page at /
                page.get_by_test_id("stAppViewContainer").wait_for()
                settled(page)
                errors = page.get_by_test_id("stException")
                assert errors.count() == 0, (name, errors.first.inner_text()[:2000])
                expect(page.get_by_text("Page not found")).to_have_count(0)
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            browser.close()
    assert all((ARTIFACTS / f"{name}.png").stat().st_size > 10_000 for name in PAGES)


def test_a_filtered_delete_and_a_persona_reset_show_the_truth_in_chromium(streamlit_app):
    """Conversations after deleting the only match of a search; Personas after "Back to the shipped persona";
    Devices after deleting a child."""
    from playwright.sync_api import expect, sync_playwright

    from voiceforge.agent.persona import list_personas, load_persona
    from voiceforge.config import load_settings
    from voiceforge.store import conversations
    from voiceforge.store.db import get_database

    base, folder = streamlit_app
    db = get_database(load_settings(forge_data_dir=folder / "data").database_url_resolved)
    db.migrate()
    conversations.create_conversation(db, "cli", "customer_service", "Where is my parcel from Tuesday?")
    conversations.create_conversation(db, "cli", "customer_service", "How many customers are there?")
    shipped = load_persona(list_personas()[0], folder / "data").greeting  # the page opens on the first persona
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base + "/conversations")
            search = page.get_by_label("Search what was said first")
            search.fill("parcel")
            search.press("Enter")
            expect(page.get_by_role("heading", name="Where is my parcel from Tuesday?")).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Delete this conversation").click()
            page.get_by_role("button", name="Delete for good").click()
            expect(page.get_by_text("No conversation matches the filter")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Nothing stored yet")).to_have_count(0)

            page.goto(base + "/personas")
            greeting = page.get_by_label("Greeting")
            expect(greeting).to_have_value(shipped, timeout=30_000)
            greeting.fill("An edited greeting.")
            page.get_by_role("button", name="Save persona").click()
            expect(page.get_by_text("Saved to")).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Back to the shipped persona").click()
            expect(page.get_by_text("Back to the shipped persona.")).to_be_visible(timeout=30_000)
            expect(page.get_by_label("Greeting")).to_have_value(shipped)

            page.goto(base + "/devices")
            page.get_by_role("tab", name="Children").click()
            page.get_by_label("Name").last.fill("Meera")
            page.get_by_text("A parent consents").click()
            page.get_by_role("button", name="Add").click()
            expect(page.get_by_text("Added Meera")).to_be_visible(timeout=30_000)
            page.get_by_text("Delete everything about this child").click()
            page.get_by_text("Yes, delete Meera's data").click()
            delete = page.get_by_role("button", name="Delete", exact=True)
            expect(delete).to_be_enabled(timeout=30_000)
            delete.click()
            expect(page.get_by_text("Deleted Meera")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("No children yet.")).to_be_visible()
        finally:
            browser.close()
