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
PAGES = ["home", "voice-chat", "compare", "evals", "tools", "phone", "devices", "conversations", "personas"]
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
            expect(page.get_by_text("Saved as version 2")).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Back to the shipped persona").click()
            expect(page.get_by_text("Back to the shipped persona (version 3).")).to_be_visible(timeout=30_000)
            expect(page.get_by_label("Greeting")).to_have_value(shipped)

            page.goto(base + "/devices")
            page.get_by_role("tab", name="Children").click()
            page.get_by_label("Name").last.fill("Meera")
            page.get_by_text("A parent consents").click()
            page.get_by_role("button", name="Add").click()
            expect(page.get_by_text("Added Meera")).to_be_visible(timeout=30_000)
            settled(page)  # the rerun after Add has drawn the child's profile (no stale copy of its buttons)
            page.get_by_text("Delete everything about this child").click()
            page.get_by_text("Yes, delete Meera's data").click()
            settled(page)
            delete = page.get_by_test_id("stExpander").filter(has_text="Delete everything about this child") \
                .get_by_role("button", name="Delete", exact=True).last
            expect(delete).to_be_enabled(timeout=30_000)
            delete.click()
            expect(page.get_by_text("Deleted Meera")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("No children yet.")).to_be_visible()
        finally:
            browser.close()


def chromium(pw, **context):  # noqa: ANN001, ANN201
    """A page in headless Chromium (``context``: Playwright's new_context options)."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    return browser, browser.new_context(viewport={"width": 1400, "height": 1000}, **context).new_page()


def test_home_and_conversations_show_the_same_spend_in_chromium(streamlit_app):
    """One conversation with a priced turn and a Twilio-billed call of 61 s: Home's total and the
    Conversations page's line for it are the same figure, and providers are not called $0."""
    import datetime as dt

    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import select, update

    from voiceforge.config import load_settings
    from voiceforge.cost import PriceTable, format_usd
    from voiceforge.records import TurnRecord
    from voiceforge.store import calls, conversations
    from voiceforge.store.db import get_database
    from voiceforge.store.models import Call

    base, folder = streamlit_app
    settings = load_settings(forge_data_dir=folder / "data")
    db = get_database(settings.database_url_resolved)
    db.migrate()
    for conv in conversations.list_conversations(db):  # what other tests on this app stored
        conversations.delete_conversation(db, conv["id"], settings.forge_data_dir)
    conv = conversations.create_conversation(db, "twilio", "customer_service")
    conversations.save_turn(db, conv, TurnRecord(user_text="What does this cost me?", reply="Very little.",
                                                 cost={"llm": 0.0021, "total": 0.0021}))
    calls.record_call(db, "CA" + "c" * 32, "outbound", "+15005550006", "+14155550100", "customer_service",
                      billed=True)
    calls.attach_stream(db, "CA" + "c" * 32, "MZ" + "c" * 32, conv)
    calls.end_stream(db, "CA" + "c" * 32)
    with db.db_session() as s:  # the call lasted 61 s: two started minutes
        ended = s.scalar(select(Call.ended_at).where(Call.call_sid == "CA" + "c" * 32))
        s.execute(update(Call).where(Call.call_sid == "CA" + "c" * 32).values(created_at=ended - dt.timedelta(seconds=61)))
    prices = PriceTable(settings.forge_prices)
    total = format_usd(0.0021 + prices.call(61))
    with sync_playwright() as pw:
        browser, page = chromium(pw)
        try:
            page.goto(base + "/")
            metrics = page.get_by_test_id("stMetric")
            expect(metrics.filter(has_text="Total")).to_contain_text(total, timeout=30_000)
            expect(metrics.filter(has_text="Spent on providers")).to_contain_text(format_usd(0.0021))
            page.goto(base + "/conversations")
            expect(page.get_by_text(f"· {total} (providers {format_usd(0.0021)}, phone {format_usd(prices.call(61))})")) \
                .to_be_visible(timeout=30_000)
        finally:
            browser.close()


def test_a_press_on_the_devices_page_shows_its_stages_and_its_device_can_go(streamlit_app, speak, tmp_path):
    """Simulate a press: each stage appears while it runs, the press reuses one simulator device,
    and "Delete a device" removes it."""
    import re

    from playwright.sync_api import expect, sync_playwright

    base, _ = streamlit_app
    pcm, rate = speak("What is your name?")  # a short reply: the press plays it to its end, in real time
    wav = tmp_path / "press.wav"
    wav.write_bytes(wrap_wav(pcm, rate))
    with sync_playwright() as pw:
        browser, page = chromium(pw)
        try:
            page.goto(base + "/devices")
            for press in range(2):
                page.get_by_role("tab", name="Simulate a press").click()
                if press == 0:
                    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(wav))
                    settled(page)  # the upload reruns the page: a click during that rerun can be lost
                page.get_by_role("button", name="Press", exact=True).click()
                expect(page.get_by_text("Pressed: streaming")).to_be_visible(timeout=120_000)
                expect(page.get_by_text("Released: waiting for the reply")).to_be_visible(timeout=60_000)
                answered = re.compile(r"^First reply audio [\d,]+ ms after release")  # "1,234 ms" past a second
                expect(page.get_by_text(answered)).to_be_visible(timeout=120_000)
                page.get_by_role("tab", name="Devices").click()
                table = page.get_by_test_id("stDataFrame").first
                expect(table.locator("td").filter(has_text="simulator (Simulate a press)")).to_have_count(1)
            settled(page)  # the rerun after the press is done before the delete is clicked
            page.get_by_text("Delete a device").click()
            page.get_by_role("button", name="Delete the device").click()
            expect(page.get_by_text("No devices yet.")).to_be_visible(timeout=30_000)
        finally:
            browser.close()


def test_a_simulated_call_opens_on_the_calls_tab_in_utc(streamlit_app, speak, tmp_path):
    """After an earlier call, a new simulated call is the one opened on the Calls tab, and its start
    time reads in UTC even in a browser set to another time zone."""
    import datetime as dt
    import re

    from playwright.sync_api import expect, sync_playwright

    from voiceforge.config import load_settings
    from voiceforge.store import calls
    from voiceforge.store.db import get_database

    base, folder = streamlit_app
    db = get_database(load_settings(forge_data_dir=folder / "data").database_url_resolved)
    db.migrate()
    calls.record_call(db, "CA" + "e" * 32, "outbound", "+15005550006", "+14155550100", "customer_service")
    pcm, rate = speak("How many customers are there?")
    wav = tmp_path / "caller.wav"
    wav.write_bytes(wrap_wav(pcm, rate))
    with sync_playwright() as pw:
        browser, page = chromium(pw, timezone_id="Asia/Kolkata")  # UTC+5:30
        try:
            page.goto(base + "/phone")
            page.get_by_role("tab", name="Call simulator").click()
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(wav))
            settled(page)  # the upload reruns the page: a click during that rerun can be lost
            page.get_by_role("button", name="Run simulated call").click()
            summary = page.get_by_text(re.compile(r"^Call CA[0-9a-f]{32} \("))
            expect(summary).to_be_visible(timeout=180_000)
            sid = re.search(r"CA[0-9a-f]{32}", summary.inner_text()).group(0)
            page.get_by_role("tab", name="Calls").click()
            opened = page.get_by_role("combobox", name="Open a call")
            expect(opened).to_have_value(re.compile(sid), timeout=30_000)
            shown = re.search(r"· (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", opened.input_value()).group(1)
            started = dt.datetime.strptime(shown, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
            assert abs((dt.datetime.now(dt.UTC) - started).total_seconds()) < 300, shown
            expect(page.get_by_test_id("stDataFrame").first.get_by_text("started (UTC)")).to_have_count(1)
        finally:
            browser.close()


def test_compare_shows_failed_turns_and_whole_names_in_chromium(tmp_path, monkeypatch):
    """A Compare run whose LLM cannot be reached (no failover): the failed column counts every turn,
    the latency is left empty rather than timed on failures, the errors are shown, and neither the
    style names nor the pros and cons are cut off."""
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    dead = {"LLM_PROVIDER": "openai", "OPENAI_LLM_BASE_URL": "http://127.0.0.1:9/v1", "FORGE_FAILOVER": "false"}
    with run_streamlit(tmp_path, **dead) as base, sync_playwright() as pw:
        browser, page = chromium(pw)
        try:
            page.goto(base + "/compare")
            page.get_by_role("button", name="Remove Speech-to-speech (Realtime)").click(timeout=60_000)
            page.get_by_role("button", name="Remove Phone streaming (call simulator)").click()
            page.get_by_role("button", name="Run the comparison").click()
            expect(page.get_by_text("4 turns failed: left out of the latency percentiles")).to_be_visible(timeout=180_000)
            summary = page.get_by_test_id("stDataFrame").first
            expect(summary.locator("th").filter(has_text="failed")).to_have_count(1)
            cells = summary.locator("td").all_inner_texts()
            assert cells[:5] == ["Batch: STT → LLM → TTS", "4", "4", "", ""], cells  # style, turns, failed, p50, p95
            scroller = summary.locator(".dvn-scroller").first  # the whole table fits: no column hidden to the right
            assert scroller.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the results table scrolls sideways"
            detail = page.get_by_test_id("stDataFrame").last
            expect(detail.locator("td").filter(has_text="openai-llm")).to_have_count(4, timeout=30_000)
            table = page.get_by_test_id("stTable")
            expect(table).to_contain_text("simplest to build and debug")
            cut = table.evaluate("t => [...t.querySelectorAll('td, th')].filter(c => c.scrollWidth > c.clientWidth + 1)"
                                 ".map(c => c.innerText)")
            assert cut == [], cut
        finally:
            browser.close()


def test_the_evals_page_runs_an_uploaded_suite_and_opens_a_failure(streamlit_app, tmp_path):
    """A malformed suite is refused before it is kept; a good one runs; the matrix shows the pass and
    the failing expectation; the failing scenario opens on its transcript and checks."""
    from playwright.sync_api import expect, sync_playwright

    base, folder = streamlit_app
    broken = tmp_path / "broken.yaml"
    broken.write_text("persona: customer_service\nscenarios: [{name: a, turns: [{user: hi, expect: {toool: x}}]}]")
    good = tmp_path / "mine.yaml"
    good.write_text("""
persona: customer_service
scenarios:
  - name: counts the customers
    turns:
      - user: "how many customers are there"
        expect: {tool: run_sql}
  - name: wrong on purpose
    turns:
      - user: "how many customers are there"
        expect: {tool: lookup_customer}
""")
    with sync_playwright() as pw:
        browser, page = chromium(pw)
        try:
            page.goto(base + "/evals")
            page.get_by_text("Add a suite").click()
            uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
            uploader.set_input_files(str(broken))
            page.get_by_role("button", name="Keep this suite").click()
            expect(page.get_by_text("unknown key 'toool'")).to_be_visible(timeout=30_000)
            assert not (folder / "data" / "evals" / "broken.yaml").exists()
            page.get_by_role("button", name="Remove broken.yaml").click()
            uploader.set_input_files(str(good))
            page.get_by_role("button", name="Keep this suite").click()
            expect(page.get_by_text("Kept mine.yaml.")).to_be_visible(timeout=30_000)
            expect(page.get_by_role("combobox", name="Suite")).to_have_value("mine.yaml (uploaded)")
            page.get_by_role("button", name="Run the suite").click()
            table = page.get_by_test_id("stTable")
            expect(table).to_contain_text("✅ pass", timeout=120_000)
            expect(table).to_contain_text("❌ turn 1: tool: expected lookup_customer; ran run_sql")
            failing = page.get_by_test_id("stExpander").filter(has_text="❌ wrong on purpose")
            failing.get_by_text("❌ wrong on purpose").click()
            expect(failing.get_by_text("The answer is 40.")).to_be_visible(timeout=30_000)
            expect(failing.get_by_text("❌ tool: expected lookup_customer; ran run_sql")).to_be_visible()
            expect(failing.locator("[data-testid='stVegaLiteChart']")).to_be_visible()  # the turn's waterfall
            page.screenshot(path=str(ARTIFACTS / "evals-run.png"), full_page=True)
        finally:
            browser.close()


def test_an_agent_made_on_the_personas_page_is_exported_as_one_file_in_chromium(streamlit_app):
    """New agent → it opens in the picker → its export downloads the file a user would commit."""
    import tomllib

    from playwright.sync_api import expect, sync_playwright

    base, folder = streamlit_app
    with sync_playwright() as pw:
        browser, page = chromium(pw, accept_downloads=True)
        try:
            page.goto(base + "/personas")
            page.get_by_text("Agents: new, duplicate, import, export, delete").click()
            page.get_by_label("Id (the file name)").fill("deli_counter")
            page.get_by_label("Name", exact=True).first.fill("Dee")
            page.get_by_label("What it says first").fill("Deli counter, Dee speaking.")
            page.get_by_role("button", name="Create agent").click()
            expect(page.get_by_text("Created deli_counter")).to_be_visible(timeout=30_000)
            expect(page.get_by_role("combobox", name="Persona").last).to_have_value("Dee (deli counter)")
            settled(page)
            with page.expect_download(timeout=30_000) as download:
                page.get_by_role("button", name="Export this agent (.toml)").click()
            table = tomllib.loads(Path(download.value.path()).read_text())
            assert table["id"] == "deli_counter" and table["greeting"] == "Deli counter, Dee speaking."
            assert (folder / "data" / "agents" / "deli_counter.toml").is_file()
        finally:
            browser.close()
