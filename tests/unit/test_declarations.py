"""Tools declared as data: the offline brain reaches a new tool from its declaration alone, and a bad
declaration is a clear error that names its file and field."""

from __future__ import annotations

import pytest

from voiceforge.providers.base import ToolCall
from voiceforge.providers.brain import OfflineBrain
from voiceforge.tools import ToolRegistry, build_registry
from voiceforge.tools.declaration import DeclarationError, load_declarations
from voiceforge.tools.registry import ToolContext

pytestmark = pytest.mark.unit

BAKERY = """
[patterns]
CAKE = '(cake|gateau|sponge)s?'

[[tool]]
name = "check_cake"
triggers = ['\\b(have|got|any)\\b.*\\b{{CAKE}}\\b']
examples = ["do you have chocolate cake", "is the lemon cake available today", "any carrot cake left"]
offer = "check which cakes we have"
tags = ["cakes"]
say = "Yes, we have {flavour} cake today."

[tool.parameters.flavour]
slot = "choice"
choices = ["chocolate", "lemon", "carrot", "red velvet"]
ask = "Which flavour would you like?"

[[tool]]
name = "book_pickup"
examples = ["I'd like to pick up an order on Friday at noon", "can I collect my cake tomorrow morning"]
offer = "book a pickup time"
tags = ["cakes"]

[tool.parameters.when]
slot = "datetime"
ask = "When would you like to pick it up?"
"""


def check_cake(ctx: ToolContext, flavour: str) -> dict:
    """Check whether a cake flavour is available today.

    Args:
        flavour: the cake flavour.
    """
    return {"flavour": flavour, "available": True}


def book_pickup(ctx: ToolContext, when: str) -> dict:
    """Book a time to pick up an order.

    Args:
        when: the pickup time, ISO 8601.
    """
    return {"when": when, "summary": f"You can pick it up at {when}."}


@pytest.fixture
def bakery(tmp_path):
    path = tmp_path / "bakery.toml"
    path.write_text(BAKERY)
    declarations = load_declarations(path)
    registry = ToolRegistry()
    registry.add(check_cake, declarations["check_cake"])
    registry.add(book_pickup, declarations["book_pickup"])
    return registry


def respond(tools, *turns: str):  # noqa: ANN001, ANN201
    messages = [{"role": "system", "content": "You are Bea, at a bakery."}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return OfflineBrain()._respond(messages, tools)


def test_a_tool_declared_as_data_is_reached_and_filled_with_no_code(bakery):
    tools = bakery.select(None)
    call = respond(tools, "Do you have any chocolate cake?")
    assert isinstance(call, ToolCall) and (call.name, call.arguments) == ("check_cake", {"flavour": "chocolate"})
    assert respond(tools, "Have you got cake today?") == "Which flavour would you like?"  # the slot's question
    pickup = respond(tools, "can I collect it on friday at 2 pm")  # by meaning: no trigger declared
    assert isinstance(pickup, ToolCall) and pickup.name == "book_pickup" and pickup.arguments["when"].endswith("T14:00")
    assert bakery.get("check_cake").phrase({"flavour": "lemon", "available": True}) == "Yes, we have lemon cake today."


def test_the_built_in_tools_come_from_their_declarations():
    registry = build_registry()
    for name in registry.names():
        tool = registry.get(name)
        assert tool.declaration is not None and tool.declaration.source.endswith(".toml"), name
        assert tool.examples and tool.extract is not None, name


@pytest.mark.parametrize(("text", "message"), [
    ('[[tool]]\nexamples = ["hi"]\n', "every [[tool]] needs a name"),
    ('[[tool]]\nname = "x"\ntrigers = ["a"]\n', "tool 'x': unknown field(s) trigers"),
    ('[[tool]]\nname = "x"\ntriggers = "a"\n', "tool 'x': triggers must be a list of strings"),
    ('[[tool]]\nname = "x"\ntriggers = ["(unclosed"]\n', "tool 'x': triggers: not a regular expression"),
    ('[[tool]]\nname = "x"\ntriggers = ["{{NOPE}}"]\n', "no pattern {{NOPE}} in [patterns]"),
    ('[[tool]]\nname = "x"\nconfirm = "yes"\n', "tool 'x': confirm must be true, false or \"unclear\""),
    ('[[tool]]\nname = "x"\n[tool.parameters.y]\nslot = 3\n', "tool 'x': parameters.y.slot must be a string"),
    ('[[tool]]\nname = "x"\n[[tool]]\nname = "x"\n', "tool 'x' is declared twice"),
    ("[[tool]\n", "bakery.toml"),
])
def test_a_bad_declaration_names_its_file_and_field(tmp_path, text, message):
    path = tmp_path / "bakery.toml"
    path.write_text(text)
    with pytest.raises(DeclarationError) as error:
        load_declarations(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_a_declaration_must_match_its_function(tmp_path):
    path = tmp_path / "bakery.toml"
    path.write_text('[[tool]]\nname = "check_cake"\n[tool.parameters.colour]\nslot = "choice"\n')
    with pytest.raises(DeclarationError, match="takes no parameter colour"):
        ToolRegistry().add(check_cake, load_declarations(path)["check_cake"])
    with pytest.raises(DeclarationError, match="is not for book_pickup"):
        ToolRegistry().add(book_pickup, load_declarations(path)["check_cake"])


@pytest.mark.parametrize(("said", "service"), [
    ("I'd like my gutters cleaned on Monday", "cleaning"),  # a choice, inflected
    ("my cooker has stopped working", "repair"),  # an alias of several words
    ("the new shower needs installing", "installation"),
    ("could you squeeze me in on Monday", "consultation"),  # no service said: the declared default
    ("the dryer upstairs keeps rattling and squealing", "repair"),  # no word for it: by meaning
])
def test_a_choice_slot_reads_inflections_and_aliases(said, service):
    tool = build_registry().get("schedule_appointment")
    args = tool.extract(f"{said} at 10 am, customer 4", {})
    assert isinstance(args, dict) and args["service"] == service, args


@pytest.mark.parametrize(("answer", "yes"), [
    ("yes please", True), ("perfect, yes", True), ("sounds good", True), ("that works", True), ("go ahead", True),
    ("no", False), ("no, Thursday", False), ("fine, but not Friday", False), ("hmm, what time was that", False),
])
def test_what_counts_as_a_yes(answer, yes):
    from voiceforge.providers.dialogue import affirms

    assert affirms(answer) is yes
