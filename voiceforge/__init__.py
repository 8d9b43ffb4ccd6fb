"""Forge's core: audio, providers, agent, tools, telephony and storage.

The core imports neither Streamlit nor FastAPI; the app (``app.py``, ``app_pages/``) and the
sidecar (``server/``) are thin layers over it.
"""

__version__ = "0.1.0"
