"""Who may use the app: Streamlit's own login when configured, else Forge's password gate.

Every page goes through :func:`require_login` before it draws anything (``app.py`` calls it
ahead of the navigation and the sidebar), so a visitor who has not signed in sees only the
sign-in form:

- **OIDC** (``st.login``): used when ``.streamlit/secrets.toml`` has an ``[auth]`` section
  (Streamlit's format: ``redirect_uri``, ``cookie_secret``, ``client_id``, ``client_secret``,
  ``server_metadata_url``; see Streamlit's "User authentication" docs).
- **Password** (``FORGE_APP_PASSWORD``): compared as HMAC-SHA256 digests in constant time; five
  wrong tries from one address within five minutes lock that address out for the rest of the
  five minutes. A right one is remembered for the browser session by a signed cookie (no
  expiry date, so it goes when the browser closes; the signature expires after 12 hours and
  changes with the password).
- **Neither**: the app serves loopback only. Bound to another address (``--server.address``,
  ``forge up --bind``), it draws nothing but the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import defaultdict, deque

import streamlit as st
import streamlit.components.v1 as components

from voiceforge.config import Settings

COOKIE = "forge_app_session"
SESSION_S = 12 * 3600
"""How long a signed-in cookie's signature is good for, s."""
MAX_FAILURES = 5
LOCKOUT_S = 300.0
"""Wrong passwords allowed per address within this window, and how long the window is, s."""
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def oidc_configured() -> bool:
    """Whether ``.streamlit/secrets.toml`` configures Streamlit's login (an ``[auth]`` section)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all
        return False


def serves_loopback_only(address: str | None) -> bool:
    """Whether Streamlit's ``server.address`` keeps the app on this machine (unset means every interface)."""
    return (address or "").strip() in LOOPBACK


class Attempts:
    """Wrong passwords per address, shared by every session of this app process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def locked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        with self._lock:
            recent = self._recent(address)
            return LOCKOUT_S - (time.monotonic() - recent[0]) if len(recent) >= MAX_FAILURES else 0.0

    def failed(self, address: str) -> None:
        """Count one wrong password from ``address``."""
        with self._lock:
            self._recent(address).append(time.monotonic())

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures[address]
        while failures and time.monotonic() - failures[0] > LOCKOUT_S:
            failures.popleft()
        return failures


@st.cache_resource
def _attempts() -> Attempts:
    return Attempts()


def _digest(text: str) -> bytes:
    return hashlib.sha256(b"forge-app-password:" + text.encode()).digest()


def password_matches(expected: str, given: str) -> bool:
    """Constant-time comparison of the password's and the attempt's digests."""
    return hmac.compare_digest(_digest(expected), _digest(given))


def _signing_key(settings: Settings) -> bytes:
    key, _ = settings.ensure_api_key()  # a secret of this installation, kept in the data folder
    return hmac.new(key.encode(), _digest(settings.forge_app_password or ""), hashlib.sha256).digest()


def session_token(settings: Settings, now: float | None = None) -> str:
    """A cookie value that proves a sign-in: ``<expiry>.<HMAC of it>``, good for :data:`SESSION_S`."""
    expiry = str(int((now or time.time()) + SESSION_S))
    return expiry + "." + hmac.new(_signing_key(settings), expiry.encode(), hashlib.sha256).hexdigest()


def token_valid(settings: Settings, token: str | None, now: float | None = None) -> bool:
    """Whether ``token`` came from :func:`session_token` with this password and has not expired."""
    expiry, _, signature = (token or "").partition(".")
    if not expiry.isdigit() or int(expiry) < (now or time.time()):
        return False
    expected = hmac.new(_signing_key(settings), expiry.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _set_cookie(value: str, clear: bool = False) -> None:
    expires = "; expires=Thu, 01 Jan 1970 00:00:00 GMT" if clear else ""
    components.html(f"<script>document.cookie = '{COOKIE}={value}; path=/; SameSite=Strict{expires}';</script>",
                    height=0)


def require_login(settings: Settings) -> None:
    """Draw the sign-in form and stop the script unless this visitor may use the app."""
    if oidc_configured():
        if not st.user.is_logged_in:
            st.title("Forge")
            st.write("Sign in to use Forge.")
            st.button("Log in", on_click=st.login, type="primary")
            st.stop()
        with st.sidebar:
            st.button("Log out", on_click=st.logout)
        return
    if settings.forge_app_password:
        _password_gate(settings)
        return
    if not serves_loopback_only(st.get_option("server.address")):
        st.error("Forge is reachable from other machines but has no login. Set FORGE_APP_PASSWORD, or "
                 "configure Streamlit's login ([auth] in .streamlit/secrets.toml), or serve on 127.0.0.1.")
        st.stop()


def _password_gate(settings: Settings) -> None:
    signed_in = st.session_state.get("forge_signed_in")
    if signed_in is None:  # this session has not decided yet: a cookie from an earlier sign-in will do
        signed_in = st.session_state["forge_signed_in"] = token_valid(settings, st.context.cookies.get(COOKIE))
    if signed_in:
        if st.session_state.pop("forge_set_cookie", False):
            _set_cookie(session_token(settings))
        with st.sidebar:
            if st.button("Sign out"):
                st.session_state["forge_signed_in"] = False  # the cookie no longer counts in this session
                _set_cookie("", clear=True)
                st.info("Signed out.")
                st.stop()
        return
    st.title("Forge")
    address = st.context.ip_address or "?"
    attempts = _attempts()
    with st.form("forge_sign_in"):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        wait = attempts.locked_for(address)
        if wait > 0:
            st.error(f"Too many wrong passwords from this address. Try again in {wait:.0f} s.")
        elif password_matches(settings.forge_app_password or "", given):
            st.session_state["forge_signed_in"] = True
            st.session_state["forge_set_cookie"] = True
            st.rerun()
        else:
            attempts.failed(address)
            time.sleep(0.5)
            st.error("Wrong password.")
    st.stop()
