"""The seed's entry point for the push-to-talk Realtime assistant: ``python realtime/push_to_talk.py [--wav F]``.

The same client as ``forge`` with no prompt (forge/assistant.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from forge.cli import main

    sys.exit(main(["assistant", *sys.argv[1:]]))
