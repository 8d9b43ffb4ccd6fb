"""How well the offline brain understands requests it was not written for.

Run: .venv/bin/python bench/routing.py            (the held-out set: bench/data/routing_heldout.tsv)
     .venv/bin/python bench/routing.py --tune     (leave-one-out over the tools' own examples)
     .venv/bin/python bench/routing.py --triggers-only   (the brain before embeddings, for comparison)

Held-out: each request's expected tool (or small_talk: no tool). A request counts as routed when
the brain, with nothing asked before, picks that tool (by trigger or by meaning); for
small_talk, when it calls no tool. "Asked" is a "Did you want me to …?" about a tool; it is
counted apart and is not a success.

--tune is the only place thresholds are chosen: each tool example is matched against all the
others (itself left out), and the best ACCEPT / CLARIFY / MARGIN are printed. The held-out set
is never read there.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voiceforge.agent.persona import load_persona  # noqa: E402
from voiceforge.providers import intents  # noqa: E402
from voiceforge.providers.brain import OfflineBrain  # noqa: E402
from voiceforge.tools import build_registry, spoken  # noqa: E402

HELDOUT = Path(__file__).parent / "data" / "routing_heldout.tsv"


def load_heldout() -> list[tuple[str, str]]:
    rows = []
    for line in HELDOUT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            utterance, expected = line.split("\t")
            rows.append((utterance.strip(), expected.strip()))
    return rows


def tools_for(persona: str):  # noqa: ANN201
    import tempfile

    return build_registry().select(load_persona(persona, Path(tempfile.mkdtemp())).tools)


def heldout(triggers_only: bool) -> None:
    tools = tools_for("customer_service")
    if triggers_only:
        for t in tools:
            t.examples = []
    brain = OfflineBrain()
    rows = load_heldout()
    per: dict[str, Counter] = defaultdict(Counter)
    failures = []
    for utterance, expected in rows:
        got = brain.understand(utterance, tools) or "none"
        if expected == "small_talk":
            ok = got == "none" or got.startswith("small_talk:")
        else:
            ok = got == expected
        asked = got.startswith("clarify:")
        per[expected]["n"] += 1
        per[expected]["ok"] += ok
        per[expected]["asked"] += asked and not ok
        if not ok:
            failures.append((utterance, expected, got))
    total = sum(c["n"] for c in per.values())
    routed = sum(c["ok"] for c in per.values())
    asked = sum(c["asked"] for c in per.values())
    label = "triggers only" if triggers_only else "triggers + embeddings"
    print(f"routing ({label}), held-out {total} requests: {routed / total:.1%} right, "
          f"{asked} asked back, {total - routed - asked} wrong or unrouted")
    for expected, c in sorted(per.items()):
        print(f"  {expected:>24}: {c['ok']:2d}/{c['n']:2d}  asked {c['asked']}")
    if failures:
        print("misses:")
        for utterance, expected, got in failures:
            print(f"  {utterance!r}: expected {expected}, got {got}")


def tune() -> None:
    tools = [t for t in tools_for("customer_service") if t.examples]
    examples = [(t.name, e) for t in tools for e in t.examples] + [
        (k, e) for k, v in intents.SMALL_TALK.items() for e in v]
    names = {t.name for t in tools} | set(intents.SMALL_TALK)
    matches = []
    for i, (label, text) in enumerate(examples):
        others: dict[str, list[str]] = defaultdict(list)
        for j, (lab, txt) in enumerate(examples):
            if j != i:
                others[lab].append(txt)
        index = intents.IntentIndex({k: [spoken.canonical(t) for t in v] for k, v in others.items()})
        m = index.match(spoken.canonical(text), names)
        matches.append((label, m))
    best = None
    for accept, margin in itertools.product([x / 100 for x in range(40, 80, 2)], [0, 0.02, 0.04, 0.06, 0.08]):
        right = sum(1 for lab, m in matches if m and m.intent == lab and m.score >= accept and m.score - m.runner_up >= margin)
        wrong = sum(1 for lab, m in matches if m and m.intent != lab and m.score >= accept and m.score - m.runner_up >= margin)
        value = right - 3 * wrong  # a wrong tool call costs more than a question
        if best is None or value > best[0]:
            best = (value, accept, margin, right, wrong)
    _, accept, margin, right, wrong = best
    top1 = sum(1 for lab, m in matches if m and m.intent == lab)
    print(f"leave-one-out top-1: {top1}/{len(matches)} = {top1 / len(matches):.1%}")
    print(f"leave-one-out over {len(matches)} examples: ACCEPT={accept:.2f} MARGIN={margin:.2f} "
          f"-> {right} right, {wrong} wrong, {len(matches) - right - wrong} below threshold")
    scores_wrong = sorted(m.score for lab, m in matches if m and m.intent != lab)
    print(f"wrong best-match scores: {', '.join(f'{s:.2f}' for s in scores_wrong)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--triggers-only", action="store_true")
    args = parser.parse_args()
    if args.tune:
        tune()
    else:
        heldout(args.triggers_only)


if __name__ == "__main__":
    main()
