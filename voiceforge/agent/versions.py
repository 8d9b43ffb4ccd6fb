"""Persona versions: every change to a persona is an immutable, numbered version with its diff.

One storage model for every persona:

- the **definition** of a persona is the table of its TOML file (``prompts/<id>.toml`` as
  shipped; an app-made agent's file lives in the data folder);
- every change to it is a **version**, ``<data dir>/personas/<id>/versions/NNNN.json``: the whole
  definition after the change, where it came from (``file``: the file changed and was picked
  up; ``app``: saved on the Personas page; ``reset``: back to the file; ``rollback``: an earlier
  version made current again), when, and a unified diff against the version before;
- the **current** persona is the newest version's definition (the file's when there is none).

A version is written once, atomically (a temporary file renamed into place) and never changed,
so a crash loses at most the save in progress. Numbers are handed out under a lock file, so the
app and the sidecar saving at once do not collide. Conversations record the version they used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCES = ("file", "app", "reset", "rollback")
"""Where a version came from (see the module docstring)."""


class VersionError(LookupError):
    """No such version of a persona."""


@dataclass(frozen=True)
class Version:
    """One version of a persona.

    Attributes:
        number: 1, 2, ... in the order they were made.
        created_at: when, UTC ISO 8601.
        source: one of :data:`SOURCES`.
        note: what changed, in words ("rollback to version 2").
        definition: the persona file's table as of this version.
        file_sha: SHA-256 of the persona file this version saw (how a file change is noticed).
        diff: a unified diff of the definition against the version before ("" for the first).
    """

    number: int
    created_at: str
    source: str
    note: str
    definition: dict[str, Any]
    file_sha: str
    diff: str

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"number": self.number, "created_at": self.created_at, "source": self.source, "note": self.note,
                "file_sha": self.file_sha, "diff": self.diff, "definition": self.definition}


def file_sha(text: str) -> str:
    """SHA-256 (hex) of a persona file's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lines(definition: dict[str, Any]) -> list[str]:
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False).splitlines(keepends=True)


class PersonaVersions:
    """The versions of one persona in ``data_dir``.

    Args:
        data_dir: Forge's data folder.
        persona_id: the persona (its file's stem).
    """

    def __init__(self, data_dir: Path, persona_id: str) -> None:
        self.persona_id = persona_id
        self.folder = data_dir / "personas" / persona_id / "versions"

    def numbers(self) -> list[int]:
        """The version numbers kept, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem) for p in self.folder.glob("[0-9][0-9][0-9][0-9].json"))

    def get(self, number: int) -> Version:
        """Version ``number``.

        Raises:
            VersionError: there is no such version.
        """
        path = self.folder / f"{number:04d}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            kept = self.numbers()
            raise VersionError(f"{self.persona_id} has no version {number} "
                               f"({'versions ' + ', '.join(map(str, kept)) if kept else 'no versions yet'})") from None
        return Version(**raw)

    def latest(self) -> Version | None:
        """The newest version (None when the persona was never versioned)."""
        numbers = self.numbers()
        return self.get(numbers[-1]) if numbers else None

    def all(self) -> list[Version]:
        """Every version, oldest first."""
        return [self.get(n) for n in self.numbers()]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, definition: dict[str, Any], source: str, note: str, sha: str) -> Version:
        """Keep ``definition`` as a new version (returns the newest unchanged when nothing differs).

        Raises:
            ValueError: ``source`` is not one of :data:`SOURCES`.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")
        with self._locked():
            latest = self.latest()
            if latest is not None and latest.definition == definition and latest.file_sha == sha:
                return latest
            before = _lines(latest.definition) if latest else []
            number = (latest.number if latest else 0) + 1
            diff = "".join(difflib.unified_diff(before, _lines(definition), f"version {number - 1}",
                                                f"version {number}")) if latest else ""
            version = Version(number=number, created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              source=source, note=note, definition=definition, file_sha=sha, diff=diff)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(version.to_json(), out, indent=2, ensure_ascii=False)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.folder / f"{number:04d}.json")
            return version
