"""``python -m forge``: the same as the `forge` console script."""

import sys

from forge.cli import main

sys.exit(main())
