"""The app shows nothing before sign-in: Chromium against the real app process.

Three set-ups: FORGE_APP_PASSWORD (wrong, then right, then a reload that the session cookie
carries, then a fresh browser that must sign in again); Streamlit's OIDC login configured in
secrets.toml (a "Log in" button and nothing else; no OIDC provider runs here, so the sign-in
itself is not followed); and no login at all on a non-loopback address (the reason, nothing else).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.streamlit_app import streamlit_app

pytestmark = [pytest.mark.browser, pytest.mark.wallclock]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
CONTENT = ("Providers", "Voice Chat", "Persona", "Sidecar:")
"""Text any signed-in page shows (the sidebar and the navigation)."""


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def shows_nothing(page) -> None:  # noqa: ANN001
    body = page.locator("body").inner_text()
    assert not any(text in body for text in CONTENT), body[:500]
    assert page.get_by_test_id("stSidebarNav").count() == 0


def test_the_password_gate(chromium, tmp_path):
    with streamlit_app(tmp_path, FORGE_APP_PASSWORD=PASSWORD) as base:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(base + "/conversations")  # a deep link is no way round it
        password = page.get_by_label("Password", exact=True)
        password.wait_for(timeout=60_000)
        shows_nothing(page)
        password.fill("wrong guess")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Wrong password.").wait_for(timeout=20_000)
        shows_nothing(page)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Providers", exact=True).wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # the session cookie is set by the page that follows the sign-in
        page.reload()
        page.get_by_text("Providers", exact=True).wait_for(timeout=60_000)  # remembered for this browser session
        assert page.get_by_label("Password", exact=True).count() == 0
        context.close()
        stranger = chromium.new_context().new_page()  # another browser: no cookie
        stranger.goto(base)
        stranger.get_by_label("Password", exact=True).wait_for(timeout=60_000)
        shows_nothing(stranger)


def test_oidc_configured_shows_only_the_log_in_button(chromium, tmp_path):
    home = tmp_path / "home"
    (home / ".streamlit").mkdir(parents=True)
    (home / ".streamlit" / "secrets.toml").write_text(
        '[auth]\nredirect_uri = "http://127.0.0.1:8501/oauth2callback"\ncookie_secret = "a-long-random-test-secret"\n'
        'client_id = "forge-test"\nclient_secret = "forge-test-secret"\n'
        'server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"\n')
    with streamlit_app(tmp_path, HOME=str(home)) as base:
        page = chromium.new_page()
        page.goto(base)
        page.get_by_role("button", name="Log in").wait_for(timeout=60_000)
        shows_nothing(page)
        page.close()


def test_no_login_on_an_outside_address_draws_only_the_reason(chromium, tmp_path):
    with streamlit_app(tmp_path, address="0.0.0.0") as base:
        page = chromium.new_page()
        page.goto(base)
        page.get_by_text("has no login").wait_for(timeout=60_000)
        shows_nothing(page)
        page.close()
