"""Questions about a persona's knowledge through the offline brain: answered from the right fact,
and requests that are not about it left to the tools, small talk and the honest refusal.

Sets (bench/data/): ``knowledge_<set>.tsv`` (the format is in its header) and, as requests that
are not about the knowledge, the routing set of the same name (``routing_<set>.tsv``), for ``--set dev``
(what ``voiceforge.agent.knowledge.ACCEPT`` may be tuned on) and ``--set heldout`` (written
before the threshold was chosen, never tuned on). Each line is the first turn of a new
conversation with the customer-service persona (typed text, ``TurnPipeline.text_turn``).

Reported: knowledge questions answered from the expected entry (recall), answers from
knowledge that were right (precision), and requests not about the knowledge that were answered
from it anyway. ``--tune`` prints the same for a range of ``ACCEPT``, on the dev set only.

Run: .venv/bin/python bench/knowledge.py [--set heldout|dev] [--verbose] [--tune]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voiceforge.agent import knowledge  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402

DATA = Path(__file__).parent / "data"


def read_set(name: str) -> list[tuple[str, str | None]]:
    """(utterance, words the answer must contain or None) per line of ``knowledge_<name>.tsv``,
    then every request of ``routing_<name>.tsv`` (tools and small talk: none is about the knowledge)."""
    out = []
    for line in (DATA / f"knowledge_{name}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            text, expected = line.split("\t")
            out.append((text.strip(), None if expected.strip() == "-" else expected.strip()))
    for line in (DATA / f"routing_{name}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out.append((line.split("\t")[0].strip(), None))
    return out


async def score(engine: Engine, lines: list[tuple[str, str | None]], verbose: bool) -> dict[str, int]:
    """Counts: questions, answered right, knowledge answers, wrong knowledge answers, leaked on others."""
    persona = engine.pipeline("customer_service", channel="bench", persist=False).persona
    answers = [e.answer for e in persona.knowledge]
    counts = {"questions": 0, "right": 0, "from_knowledge": 0, "wrong": 0, "others": 0, "leaked": 0}
    for text, expected in lines:
        result = await engine.pipeline("customer_service", channel="bench", persist=False).text_turn(text)
        said = next((a for a in answers if a in result.reply), None)
        counts["from_knowledge"] += said is not None
        if expected is None:
            counts["others"] += 1
            counts["leaked"] += said is not None
        else:
            counts["questions"] += 1
            good = said is not None and expected in said
            counts["right"] += good
            counts["wrong"] += said is not None and not good
        if verbose and ((expected is None) != (said is None) or (said and expected and expected not in said)):
            print(f"{text!r}: expected {expected or 'no fact'}; said {result.reply!r}")
    return counts


def report(counts: dict[str, int], label: str) -> None:
    """Print one set's figures."""
    q, right, answered = counts["questions"], counts["right"], counts["from_knowledge"]
    print(f"{label}: answered right {right} of {q} ({right / q:.0%}); precision "
          f"{(answered - counts['wrong'] - counts['leaked']) / max(1, answered):.0%}; "
          f"answered from knowledge on {counts['leaked']} of {counts['others']} other requests")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["dev", "heldout"], default="heldout")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--tune", action="store_true", help="sweep knowledge.ACCEPT on the dev set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(load_settings(forge_data_dir=Path(folder)))
        engine.ensure_mock_data()
        if args.tune:
            for threshold in (0.3, 0.35, 0.4, 0.45, 0.5):
                knowledge.ACCEPT = threshold
                report(await score(engine, read_set("dev"), False), f"ACCEPT {threshold:.2f} (dev)")
            return
        print(f"\n## Knowledge ({args.set}, ACCEPT {knowledge.ACCEPT})\n")
        report(await score(engine, read_set(args.set), args.verbose), f"- {args.set}")


if __name__ == "__main__":
    asyncio.run(main())
