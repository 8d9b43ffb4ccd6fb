"""Eval time per scenario per style: the starter suites (evals/*.yaml) run in each runnable style.

Prints, per style, the median and the slowest scenario in ms and the pass count. The first
scenario of a run includes loading the models; each style's figures are taken on a warm engine
(one untimed pass first).

Run: .venv/bin/python bench/evals.py [--styles text,voice,phone,realtime]  (all four by default; the
phone and realtime styles start a sidecar and the offline Realtime server and take a few minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forge.evals import Runner  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402
from voiceforge.evals import STYLES, load_suite  # noqa: E402

SUITES = sorted((Path(__file__).resolve().parent.parent / "evals").glob("*.yaml"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", default=",".join(STYLES))
    args = parser.parse_args()
    suites = [load_suite(p) for p in SUITES]
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(load_settings(forge_data_dir=Path(folder)))
        engine.ensure_mock_data()
        runner = Runner(engine)
        print(f"\n## Eval time per scenario ({len(suites)} starter suites, "
              f"{sum(len(s.scenarios) for s in suites)} scenarios)\n")
        print("| style | median ms | slowest ms | passed |\n| --- | --- | --- | --- |")
        for style in args.styles.split(","):
            await runner.run(suites[0], style=style)  # warm: models loaded, lines synthesized once
            results = [r for suite in suites for r in (await runner.run(suite, style=style)).scenarios]
            seconds = [r.seconds for r in results]
            print(f"| {style} | {statistics.median(seconds) * 1000:,.0f} | {max(seconds) * 1000:,.0f} | "
                  f"{sum(r.passed() for r in results)} of {len(results)} |")


if __name__ == "__main__":
    asyncio.run(main())
