"""The `forge` command and the runners that start Forge's own processes.

The entry package sits above everything else: it may import the core (``voiceforge``), the
sidecar (``server``) and the speech-to-speech client (``realtime``); nothing imports it but
the app's pages (for a local simulated call) and the console script.
"""
