"""Reading arguments out of spoken utterances: numbers, names, dates, customer references.

Used by the offline brain's extractors; a real LLM fills arguments itself.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from voiceforge import clock

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_NUMBER_WORDS = "|".join(sorted([*_UNITS, *_TENS], key=len, reverse=True))
_NUMBER = rf"(\d+|(?:{_NUMBER_WORDS})(?:[\s-](?:{_NUMBER_WORDS}))?)"


# Words callers use for the business's own nouns, mapped to the nouns the tools are described in.
_CANONICAL = {
    "order": ("package", "parcel", "delivery", "shipment", "purchase"),
    "orders": ("packages", "parcels", "deliveries", "shipments", "purchases"),
    "appointment": ("visit", "booking", "reservation", "slot", "session"),
    "appointments": ("visits", "bookings", "reservations", "slots", "sessions"),
    "customer": ("client", "member"),
    "customers": ("clients", "members"),
    "team": ("staff", "crew", "colleagues", "manager", "supervisor", "group chat"),
}
_CANONICAL_RE = [(re.compile(rf"\b{re.escape(word)}\b", re.I), noun) for noun, words in _CANONICAL.items()
                 for word in words]


def canonical(utterance: str) -> str:
    """The utterance with the business's nouns in one spelling ("my parcel" → "my order").

    The offline brain matches triggers and meanings on this form; arguments are read from the
    words as spoken.
    """
    for pattern, noun in _CANONICAL_RE:
        utterance = pattern.sub(noun, utterance)
    return utterance


def spoken_int(text: str) -> int | None:
    """"12", "twelve", "forty-two", "forty two" → int; anything else → None."""
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    parts = re.split(r"[\s-]+", text)
    if len(parts) == 1 and parts[0] in _UNITS:
        return _UNITS[parts[0]]
    if len(parts) == 1 and parts[0] in _TENS:
        return _TENS[parts[0]]
    if len(parts) == 2 and parts[0] in _TENS and parts[1] in _UNITS and _UNITS[parts[1]] < 10:
        return _TENS[parts[0]] + _UNITS[parts[1]]
    return None


AMOUNT_WORDS = rf"(?:\$\s*\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?|(?:\b(?:a|an|and|hundred|thousand|{_NUMBER_WORDS})\b[\s-]*)+)"
"""An amount as said: "150", "$1,200.50", "a hundred", "two hundred and fifty", "fifty" (``spoken_amount`` reads it)."""


def spoken_amount(text: str) -> float | None:
    """"150", "$1,200", "a hundred", "two hundred and fifty", "three thousand" → the number; else None.

    Bare "a" or "and" are no amount ("more than a few" → None).
    """
    text = text.strip().lower().lstrip("$").replace(",", "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, current, seen = 0, 0, False
    for word in re.split(r"[\s-]+", text):
        if word in ("and", ""):
            continue
        if word in ("a", "an") and not seen:
            current = 1
        elif word in _UNITS or word in _TENS:
            current += _UNITS.get(word, 0) + _TENS.get(word, 0)
            seen = True
        elif word == "hundred":
            current, seen = max(current, 1) * 100, True
        elif word == "thousand":
            total, current, seen = total + max(current, 1) * 1000, 0, True
        else:
            return None
    return float(total + current) if seen else None


def number_after(utterance: str, *keywords: str) -> int | None:
    """The number spoken after any of ``keywords`` ("customer 12", "appointment number seven")."""
    for word in keywords:
        m = re.search(rf"\b{word}\s+(?:number\s+|id\s+|no\.?\s+|#\s*)?(?:is\s+)?{_NUMBER}\b", utterance, re.I)
        if m:
            value = spoken_int(m.group(1))
            if value is not None:
                return value
    return None


def first_number(utterance: str) -> int | None:
    """The first number in an utterance, in digits or words ("two large pizzas" → 2), or None."""
    for m in re.finditer(rf"\b{_NUMBER}\b", utterance, re.I):
        value = spoken_int(m.group(1))
        if value is not None:
            return value
    return None


def phone_in(utterance: str) -> str | None:
    """A phone number of 7 or more digits (spaces, dashes and dots allowed) as ``+digits``."""
    m = re.search(r"(\+?\d[\d\s().-]{6,}\d)", utterance)
    if not m:
        return None
    digits = re.sub(r"\D", "", m.group(1))
    if len(digits) < 7:
        return None
    return "+" + (digits if len(digits) > 10 else "1" + digits if len(digits) == 10 else digits)


_NAME_CUES = (r"(?:for|named|name is|name's|i am|i'm|this is|customer|about|of|called|look ?up|find|pull up"
              r"|^\W*(?:hi|hello|hey)\W+it'?s)")  # "hi, it's Maria Gonzalez": "it's" after a greeting only
_STOP = {
    "my", "the", "a", "an", "me", "please", "order", "orders", "history", "appointment", "appointments",
    "customer", "account", "number", "id", "today", "tomorrow", "next", "on", "at", "and", "to", "is",
    "with", "in", "thanks", "thank", "you", "details", "record", "records", "profile", "info", "information",
    "for", "of", "about", "named", "called", "up", "find", "look", "lookup", "pull", "can", "could", "zip", "code", "status", "what", "where", "when", "i", "am", "this", "name", "it", "client", "was",
    # Words that follow a cue ("about something", "of them") and are never a name.
    "something", "anything", "nothing", "everything", "someone", "somebody", "anyone", "anybody", "stuff",
    "thing", "things", "that", "these", "those", "them", "him", "her", "it's", "calling", "here", "just",
    "question", "problem", "issue", "help", "purchase", "purchases", "delivery", "package", "parcel",
    "speaking", "again", "really", "so", "very", "not", "out", "booking", "bookings", "visit", "visits",
    # Days and times of day follow "for" and "on" ("a cleaning for Friday") and are never a name.
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "week", "month", "year",
    "morning", "afternoon", "evening", "night", "tonight", "noon", "weekend",
    # Answers that are not a name ("sure", "yes").
    "sure", "yes", "yeah", "no", "okay", "ok", "right", "correct", "hello", "hi", "hey", "bye", "goodbye",
}


_WEAK_CUES = {"for", "about", "of"}
"""Cues that often precede things, not people: the name after them must be capitalised."""


def name_in(utterance: str) -> str | None:
    """A person's name spoken after a cue ("for Alice Johnson", "my name is Brian Smith").

    Returns up to three words after the last cue that are not stop words, or None.
    """
    best = None
    intro = re.match(r"^\W*(?:(?:hi|hello|hey)\W+)?([A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+){0,2})\s+(?:here|calling|speaking)\b",
                     utterance, re.I) or re.match(r"^\W*([A-Z][a-z'-]+\s+[A-Z][a-z'-]+),", utterance)
    if intro and not any(w.lower() in _STOP or w.lower() in ("i'm", "we're", "she's", "he's", "hello", "hi", "hey")
                         for w in intro.group(1).split()):
        return intro.group(1)  # "Grace Wilson calling, ...", "David Jackson here"
    its = re.search(r"\bit'?s\s+([A-Z][a-z'-]+\s+[A-Z][a-z'-]+)\b", utterance)
    if its and not any(w.lower() in _STOP or w.lower() in WEEKDAYS or w.lower() in MONTHS for w in its.group(1).split()):
        return its.group(1)  # "…, it's Lucas Walker": a capitalised full name after "it's"
    # A lookahead lets candidates overlap: "look up the orders for Alice Johnson" yields both.
    for m in re.finditer(rf"\b{_NAME_CUES}\s+(?=((?:[A-Za-z'-]+\s*){{1,4}}))", utterance, re.I):
        weak = m.group(0).strip().lower() in _WEAK_CUES
        words = []
        for word in re.findall(r"[A-Za-z'-]+", m.group(1)):
            if weak and not words and word.lower() not in _STOP and not word[0].isupper():
                break  # after "about", "of", "for" only a capitalised word is a name ("about a late delivery")
            if not words and word.islower() and word.endswith("ing"):
                break  # "I'm waiting on a delivery": a verb, not a name
            if word.lower() in _STOP:
                if words:
                    break
                continue
            words.append(word)
            if len(words) == 3:
                break
        if words:
            best = " ".join(w.capitalize() if w.islower() else w for w in words)
    return best


_SERVICES = ["consultation", "cleaning", "checkup", "check-up", "repair", "installation"]


def service_in(utterance: str) -> str | None:
    """The appointment service named in the utterance (normalized), or None."""
    for service in _SERVICES:
        if re.search(rf"\b{service}\b", utterance, re.I):
            return service.replace("-", "")
    return None


WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
"""Weekday names, Monday first (``datetime.weekday()`` order)."""
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
"""Clock hours said in words, one to twelve."""
_HOUR_WORD = rf"({'|'.join(HOURS)})"
_MINUTE_WORDS = {"o'clock": "00", "oclock": "00", "fifteen": "15", "thirty": "30", "forty-five": "45", "forty five": "45"}


def _spoken_clock(text: str) -> str:
    """Clock times said in words as digits, in lower-case text.

    "at four" -> "at 4", "four thirty pm" -> "4:30 pm", "half past two" -> "2:30".
    """

    def hour(word: str) -> str:
        return str(HOURS.index(word) + 1)

    text = re.sub(rf"\bhalf past {_HOUR_WORD}\b", lambda m: f"{hour(m.group(1))}:30", text)
    text = re.sub(rf"\bquarter past {_HOUR_WORD}\b", lambda m: f"{hour(m.group(1))}:15", text)
    minutes = "|".join(_MINUTE_WORDS)
    text = re.sub(rf"\b{_HOUR_WORD}\s+({minutes})\b",
                  lambda m: f"{hour(m.group(1))}:{_MINUTE_WORDS[m.group(2)]}", text)
    text = re.sub(rf"\b{_HOUR_WORD}(?=\s*(?:[ap]\.?\s*m\b|in the (?:morning|afternoon|evening)\b))",
                  lambda m: hour(m.group(1)), text)
    text = re.sub(rf"(?<=\bat ){_HOUR_WORD}\b", lambda m: hour(m.group(1)), text)
    # "9 in the morning" -> "9 am", "3 in the afternoon" -> "3 pm", "noon" -> "12 pm"
    text = re.sub(r"\b(\d{1,2}(?::\d{2})?)\s+in the morning\b", r"\1 am", text)
    text = re.sub(r"\b(\d{1,2}(?::\d{2})?)\s+in the (?:afternoon|evening)\b", r"\1 pm", text)
    # "3 o'clock", "say four o'clock": a time however it is led in
    text = re.sub(rf"\b(?:at\s+)?(\d{{1,2}}|{'|'.join(HOURS)})\s*o'?\s*clock\b",
                  lambda m: f"at {m.group(1) if m.group(1).isdigit() else hour(m.group(1))}", text)
    return re.sub(r"\b(?:at\s+)?(noon|midday)\b", "at 12 pm", text)


def _clock_in(text: str) -> re.Match[str] | None:
    """A clock time in lower-case text with times in digits ("10 am", "at 3", "2:30"): hour, minute, a/p."""
    return re.search(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?\s*m\b\.?", text) or re.search(
        r"\bat\s+(\d{1,2})(?::(\d{2}))?\b(?!\s*(?:st|nd|rd|th))", text
    ) or re.search(r"\b(\d{1,2}):(\d{2})\b", text)


def time_in(utterance: str) -> bool:
    """Whether the utterance says a time of day ("10 am", "at four", "half past two", "noon")."""
    text = _spoken_clock(utterance.lower())
    return _clock_in(text) is not None or bool(re.search(r"\b(noon|midday)\b", text))


def when_in(utterance: str, now: dt.datetime | None = None) -> str | None:
    """A date and time spoken in the utterance, as ISO 8601 ``YYYY-MM-DDTHH:MM`` (or None).

    Understands "tomorrow", weekdays ("next Monday"), month-day dates ("December 3rd") and times
    ("10 am", "2:30 pm", "at 3", in words too: "at four", "half past two"); a date without a time
    gets 09:00. Uses dateutil's fuzzy parser.
    """
    from dateutil import parser as dateparser

    now = now or clock.now().replace(tzinfo=None)
    text = _spoken_clock(utterance.lower())
    base = now.replace(hour=9, minute=0, second=0, microsecond=0)
    date = None
    if "day after tomorrow" in text:
        date = base + dt.timedelta(days=2)
    elif "tomorrow" in text:
        date = base + dt.timedelta(days=1)
    else:
        for i, day in enumerate(WEEKDAYS):
            if day in text:
                ahead = (i - now.weekday()) % 7 or 7
                date = base + dt.timedelta(days=ahead)
                break
    time_match = _clock_in(text)
    month_match = re.search(
        r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?\b", text
    )
    if date is None and month_match:
        try:
            date = dateparser.parse(f"{month_match.group(1)} {month_match.group(2)}", default=base)
        except (ValueError, OverflowError):
            date = None
        if date is not None and date < base:
            date = date.replace(year=date.year + 1)
    if date is None and not time_match:
        return None
    date = date or base + dt.timedelta(days=1)
    if time_match:
        hour = int(time_match.group(1))
        minute = int(time_match.group(2) or 0)
        meridiem = time_match.group(3) if time_match.lastindex and time_match.lastindex >= 3 else None
        if meridiem == "p" and hour < 12:
            hour += 12
        elif meridiem == "a" and hour == 12:
            hour = 0
        elif meridiem is None and 1 <= hour <= 7:
            hour += 12  # "at 3" in business hours means 3 pm
        if 0 <= hour < 24 and 0 <= minute < 60:
            date = date.replace(hour=hour, minute=minute)
    return date.strftime("%Y-%m-%dT%H:%M")


_ANSWER_LEAD = re.compile(r"^\W*((yes|yeah|sure|okay|ok|right|so|um|uh|well|hi|hello|it'?s|it is|i'?m|i am|this is"
                          r"|my name'?s|my name is|the name'?s|the name is|name'?s|that'?s|that is|sorry)\W+)+", re.I)


def answer_ref(answer: str) -> dict[str, Any]:
    """Who the caller is, read from an answer to "Could you tell me your name or your customer number?".

    An answer needs no cue word: "number 9", "thirty three", "Isabel White", "it's Sophia
    Taylor, T A Y L O R". Returns {"customer_id"}, {"phone"}, {"name"} or {} (not an identity).
    """
    phone = phone_in(answer)
    if phone:
        return {"phone": phone}
    if re.search(r"\b(not|don'?t|no idea|forgot(ten)?|can'?t|cannot|unsure)\b", answer, re.I) or time_in(answer):
        return {}  # "I'm not sure of my number", "Friday at 10": no identity in it
    number = re.search(rf"\b{_NUMBER}\b", answer, re.I)
    if number and spoken_int(number.group(1)) is not None:
        return {"customer_id": spoken_int(number.group(1))}
    rest = _ANSWER_LEAD.sub("", answer.strip())
    words = []
    for word in re.findall(r"[A-Za-z'-]+", rest):
        if len(word) == 1:  # a spelling ("T A Y L O R") repeats the name said before it
            break
        if word.lower() in _STOP or (word.islower() and word.endswith("ing")):
            if words:
                break
            continue
        words.append(word)
        if len(words) == 3:
            break
    others = [w for w in re.findall(r"[A-Za-z'-]+", rest) if len(w) > 1 and w not in words and w.lower() not in _STOP]
    if len(re.findall(r"[A-Za-z'-]+", rest)) > 3 and not any(w[:1].isupper() for w in words):
        return {}  # a sentence in lower case ("can someone repair it on Friday") names nobody
    if words and not others:  # the answer is the name (and perhaps its spelling), nothing else
        return {"name": " ".join(w.capitalize() if w.islower() else w for w in words)}
    return {}


_ORDINALS = {"first": 0, "1st": 0, "next": 0, "earliest": 0, "soonest": 0, "second": 1, "2nd": 1, "third": 2,
             "3rd": 2, "fourth": 3, "4th": 3, "last": -1, "latest": -1}


def item_in(utterance: str, items: list[dict[str, Any]], key: str) -> Any:
    """The ``key`` of the list item the utterance points at, or None.

    By position ("the first one", "the second", "the last") or by what only one item has (its
    service, its weekday: "the repair", "the one on Wednesday").
    """
    text = utterance.lower()
    usable = [item for item in items if isinstance(item, dict) and key in item]
    for word, index in _ORDINALS.items():
        if re.search(rf"\b{word}\b", text) and -len(usable) <= index < len(usable):
            return usable[index][key]
    new_time = time_in(utterance)  # "Friday at 9 am" is a new time, not "the one on Friday"

    def marks(item: dict[str, Any]) -> set[str]:
        out = {str(v).lower() for v in item.values() if isinstance(v, str) and " " not in v and not v[:1].isdigit()}
        for v in item.values() if not new_time else ():
            try:
                out.add(WEEKDAYS[dt.datetime.fromisoformat(str(v)).weekday()])
            except ValueError:
                continue
        return out
    words = set(re.findall(r"[a-z]+", text.replace("-", "")))
    matching = [item for item in usable if marks(item) & words]
    return matching[0][key] if len(matching) == 1 else None


def describe_item(item: dict[str, Any]) -> str | None:
    """A list item as said, or None when it has neither a one-word value nor a date.

    Its first one-word value and its first date and time: "the repair on Wednesday, December 16 at 2 PM".
    """
    kind = next((v for v in item.values() if isinstance(v, str) and v and " " not in v and not v[:1].isdigit()), None)
    when = None
    for v in item.values():
        try:
            when = say_when(str(v)) if isinstance(v, str) and v[:1].isdigit() else None
        except ValueError:
            continue
        if when:
            break
    if kind is None and when is None:
        return None
    return "the " + " ".join(part for part in (kind or "one", f"on {when}" if when else "") if part)


def say_when(iso: str) -> str:
    """An ISO 8601 date and time as said: "Friday, December 11 at 10 AM"."""
    when = dt.datetime.fromisoformat(iso)
    return when.strftime("%A, %B ") + str(when.day) + when.strftime(" at %-I:%M %p").replace(":00 ", " ")


def change_when(iso: str, correction: str) -> str | None:
    """``iso`` changed by a correction: a new day keeps the time, a new time keeps the day; None if neither.

    "no, Saturday" moves 2026-12-11T10:00 to Saturday 10:00; "make it 3 pm instead" keeps the
    date at 15:00; "Monday at 11" replaces both.
    """
    said = when_in(correction)
    if said is None:
        hour = re.search(r"\b(\d{1,2})\b", correction)  # "actually 10 would be better": a bare hour
        said = when_in(f"at {hour.group(1)}") if hour and 1 <= int(hour.group(1)) <= 12 else None
        if said is None:
            return None
        old = dt.datetime.fromisoformat(iso)
        return old.replace(hour=dt.datetime.fromisoformat(said).hour, minute=0).strftime("%Y-%m-%dT%H:%M")
    old, new = dt.datetime.fromisoformat(iso), dt.datetime.fromisoformat(said)
    has_time = time_in(correction)
    has_day = new.date() != (clock.now().replace(tzinfo=None) + dt.timedelta(days=1)).date() or any(
        re.search(rf"\b{day}\b", correction, re.I) for day in (*WEEKDAYS, "tomorrow", "today"))
    if has_time and not has_day:
        new = old.replace(hour=new.hour, minute=new.minute)
    elif has_day and not has_time:
        new = new.replace(hour=old.hour, minute=old.minute)
    return new.strftime("%Y-%m-%dT%H:%M")


def identity_in(said: str) -> dict[str, Any]:
    """Who the caller says they are, unasked; {} when they do not say.

    By a cue ("I'm customer 4", "this is James Jackson") or a bare full name ("Isabel Young":
    two or three capitalised words). A bare number is not an identity here ("three" may be an hour); only an answer to the
    agent's own "name or customer number?" is read that loosely (:func:`answer_ref`).
    """
    named = customer_ref(said, {})
    words = said.strip(" .,!?").split()
    if not named and 2 <= len(words) <= 3 and all(w[:1].isupper() for w in words):
        named = answer_ref(said)
    return named


def without_identity(utterance: str) -> str:
    """``utterance`` without the words that say who the caller is, when a request is left.

    "when's my checkup, I'm Carmen Walker" → "when's my checkup"; "David Smith here, where's my
    order" → "where's my order". The name says who, not what: read by meaning, it pulls any
    request toward looking the caller up. Unchanged when it names nobody by name or fewer than
    two words remain.
    """
    name = identity_in(utterance).get("name")
    if not name:
        return utterance
    lead = r"(?:(?:hi|hello|hey|um+|uh+)\W+)*(?:i'?m|i am|this is|it'?s|my name is|my name'?s)?\s*"
    rest = re.sub(rf"\b{lead}{re.escape(str(name))}(?:\s+(?:here|calling|speaking))?\b", " ", utterance, flags=re.I)
    rest = re.sub(r"\s+", " ", re.sub(r"^[\W_]+|[\s,;]+$", "", rest)).strip()
    return rest if len(rest.split()) >= 2 else utterance


def customer_ref(utterance: str, known: dict[str, Any]) -> dict[str, Any]:
    """How the utterance names a customer: {"customer_id"}, {"phone"}, {"name"}, or what is known.

    ``known`` holds facts from earlier tool results ("customer_id" once a customer was found) and,
    when the agent asked who is calling, ``answer``: the caller's answer, read on its own first.
    """
    if known.get("answer"):
        found = answer_ref(known["answer"])
        if found:
            return found
    cid = number_after(utterance, "customer", "account", "client")
    if cid is not None:
        return {"customer_id": cid}
    phone = phone_in(utterance)
    if phone:
        return {"phone": phone}
    name = name_in(utterance)
    if name:
        return {"name": name}
    words = utterance.strip(" .,!?").split()
    if 2 <= len(words) <= 3 and all(w[:1].isupper() for w in words) and answer_ref(utterance).get("name"):
        return {"name": answer_ref(utterance)["name"]}  # a bare full name ("Rachel Harris")
    if known.get("customer_id"):
        return {"customer_id": known["customer_id"]}
    if known.get("introduced"):  # "this is James Jackson" earlier, before any request
        return dict(known["introduced"])
    return {}
