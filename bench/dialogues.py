"""Multi-turn dialogues and out-of-scope requests through the offline brain: does a request survive
the turns it takes, and does the brain admit what it cannot do?

Sets (bench/data/): ``dialogues_<set>.txt`` (the format is in its header) and
``out_of_scope_<set>.txt`` (one request a line), for ``--set dev`` (what the brain may be tuned
on) and ``--set heldout`` (written before any change, measured, never tuned on).

Each dialogue is a new conversation (``TurnPipeline.text_turn`` per caller turn, as typed text,
with the dialogue's caller number when it has one). It succeeds when the expected tool runs with
the expected arguments at some turn (and no other tool with side effects ran before it), or,
for "expect: none", when no tool runs at the last turn (the out-of-scope one) and no tool with
side effects runs at all. Reported: success rate, the turns it took (the
caller turn at which the tool ran), and per dialogue what went wrong with ``--verbose``.

Out-of-scope requests are each the first turn of a new conversation: how many were refused or
answered honestly (no tool, and no slot question or "did you want me to ..." that takes the
request for a tool's), and precision and recall of "answered without a tool" (recall: out-of-scope requests answered without a tool; precision:
of all the requests answered without a tool, in both sets, how many were out of scope, with
the dialogues' opening turns that expect a tool as the in-scope side).

Run: .venv/bin/python bench/dialogues.py [--set heldout|dev] [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voiceforge.config import load_settings  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402
from voiceforge.providers.dialogue import asked, slot_questions  # noqa: E402
from voiceforge.store import mockdata  # noqa: E402

DATA = Path(__file__).parent / "data"
SIDE_EFFECTS = {"schedule_appointment", "reschedule_appointment", "cancel_appointment", "send_sms",
                "notify_telegram", "end_call"}
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass
class Dialogue:
    """One scripted caller: its turns and what should happen."""

    id: str
    turns: list[str] = field(default_factory=list)
    expect_tool: str | None = None
    expect_args: dict[str, str] = field(default_factory=dict)
    persona: str = "customer_service"
    caller: str | None = None


def read_dialogues(path: Path) -> list[Dialogue]:
    """The dialogues of a file in the format its header describes."""
    out: list[Dialogue] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("## "):
            out.append(Dialogue(line[3:].strip()))
        elif not out:
            continue
        elif line.startswith("# persona:"):
            out[-1].persona = line.split(":", 1)[1].strip()
        elif line.startswith("# caller:"):
            out[-1].caller = line.split(":", 1)[1].strip()
        elif line.startswith("# expect:"):
            tool, *pairs = line.split(":", 1)[1].split()
            out[-1].expect_tool = None if tool == "none" else tool
            out[-1].expect_args = dict(p.split("=", 1) for p in pairs)
        elif line.startswith("> "):
            out[-1].turns.append(line[2:].strip())
    return out


def matches(call: dict, tool: str, expected: dict[str, str]) -> bool:
    """Whether a stored tool call is ``tool`` with the ``expected`` arguments (see the set's header)."""
    if call["name"] != tool:
        return False
    args = call.get("arguments") or {}
    for key, want in expected.items():
        if key in ("day", "hour"):
            try:
                when = dt.datetime.fromisoformat(str(args.get("starts_at")))
            except ValueError:
                return False
            if (key == "day" and WEEKDAYS[when.weekday()] != want) or (key == "hour" and when.hour != int(want)):
                return False
        elif str(args.get(key)).lower() != want.lower():
            result = call.get("result")  # lookup_customer(name=...) identifies customer_id=... by its result
            if key in args or not isinstance(result, dict) or str(result.get(key)).lower() != want.lower():
                return False
    return True


async def run_dialogue(engine: Engine, dialogue: Dialogue) -> tuple[bool, int | None, list[str]]:
    """(succeeded, the caller turn it succeeded at, a transcript for --verbose)."""
    pipeline = engine.pipeline(dialogue.persona, channel="bench", caller=dialogue.caller, persist=False)
    log: list[str] = []
    for number, text in enumerate(dialogue.turns, start=1):
        result = await pipeline.text_turn(text)
        calls = result.tool_calls
        log.append(f"  > {text}")
        log += [f"    [{c['name']} {c.get('arguments')}]" for c in calls]
        log.append(f"  < {result.reply}")
        last = number == len(dialogue.turns)
        for call in calls:
            if dialogue.expect_tool is None:
                if last or call["name"] in SIDE_EFFECTS:
                    return False, None, log
                continue  # "I'm customer 4" before the out-of-scope turn may well look the caller up
            if matches(call, dialogue.expect_tool, dialogue.expect_args):
                return True, number, log
            if call["name"] in SIDE_EFFECTS:
                return False, None, log  # a wrong booking, text or hang-up is a failure
        if result.ended:
            break
    return dialogue.expect_tool is None, None, log


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["dev", "heldout"], default="heldout")
    parser.add_argument("--verbose", action="store_true", help="print every dialogue that failed")
    args = parser.parse_args()
    dialogues = read_dialogues(DATA / f"dialogues_{args.set}.txt")
    requests = [line.strip() for line in (DATA / f"out_of_scope_{args.set}.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(load_settings(forge_data_dir=Path(folder)))
        engine.ensure_mock_data()
        won, turns, failed = 0, [], []
        for dialogue in dialogues:
            # Each dialogue starts from the same data: an earlier one may have cancelled or moved
            # the appointment this one is about.
            mockdata.generate(engine.business_db, engine.settings.forge_mock_customers)
            ok, at, log = await run_dialogue(engine, dialogue)
            won += ok
            if ok and at is not None:
                turns.append(at)
            if not ok:
                failed.append((dialogue, log))
        # Out of scope: each request alone; in scope: the first turn of each dialogue that expects a tool.
        no_tool_oos = honest = 0
        for text in requests:
            pipeline = engine.pipeline("customer_service", channel="bench", persist=False)
            result = await pipeline.text_turn(text)
            no_tool_oos += not result.tool_calls
            # Honest: no tool, and no question that takes the request for a tool's (a slot or
            # "did you want me to ..."); the reply says what the agent cannot do, or answers.
            questioned = asked(result.reply, slot_questions(pipeline.tools)) is not None \
                or result.reply.startswith("Did you want me to ")
            honest += not result.tool_calls and not questioned
            if args.verbose and not result.tool_calls and questioned:
                print(f"out of scope, but asked as if for a tool: {text!r} -> {result.reply!r}")
            if args.verbose and result.tool_calls:
                print(f"out of scope, but ran {result.tool_calls[0]['name']}: {text!r} -> {result.reply!r}")
        in_scope = [d for d in dialogues if d.expect_tool and len(d.turns) == 1]
        no_tool_in = 0
        for d in in_scope:
            result = await engine.pipeline(d.persona, channel="bench", caller=d.caller, persist=False).text_turn(d.turns[0])
            no_tool_in += not result.tool_calls
    if args.verbose:
        for dialogue, log in failed:
            print(f"\n{dialogue.id}: expected {dialogue.expect_tool or 'no tool'} {dialogue.expect_args}")
            print("\n".join(log))
    print(f"\n## Dialogues ({args.set})\n")
    print(f"- success: {won} of {len(dialogues)} ({won / len(dialogues):.0%})")
    if turns:
        print(f"- caller turns to success: median {statistics.median(turns):.0f}, max {max(turns)}")
    print(f"- out of scope answered without a tool (recall): {no_tool_oos} of {len(requests)} "
          f"({no_tool_oos / len(requests):.0%})")
    print(f"- out of scope refused or answered honestly (no tool and no question taking it for a tool's): "
          f"{honest} of {len(requests)} ({honest / len(requests):.0%})")
    answered_plain = no_tool_oos + no_tool_in
    if answered_plain:
        print(f"- precision of 'no tool' (single-turn in-scope requests that got no tool: {no_tool_in} of "
              f"{len(in_scope)}): {no_tool_oos / answered_plain:.0%}")


if __name__ == "__main__":
    asyncio.run(main())
