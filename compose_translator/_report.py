"""Problem reporting: every message names the file, line, service and key it is about."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from compose_translator._errors import ComposeError
from compose_translator._yaml import Lines

__all__ = ["Problems", "Source", "format_key", "printable"]

Path = tuple[str | int, ...]


def printable(text: str) -> str:
    """`text` with control characters (NUL, newline, escape...) written as `\\xNN` escapes,
    so a hostile value cannot break or forge lines of a message."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


@dataclass(frozen=True)
class Source:
    """One loaded file: its name for messages and the line of each path in it."""

    name: str
    lines: Lines


def format_key(path: Sequence[str | int]) -> str:
    """`('ports', 0, 'published')` -> `ports[0].published`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Problems:
    """Collects errors and warnings; `raise_if_any` turns errors into one ComposeError."""

    sources: list[Source] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def locate(self, path: Path) -> str:
        """`file:line` of the deepest known part of `path`, searching later files first."""
        for source in reversed(self.sources):
            for end in range(len(path), 0, -1):
                line = source.lines.get(tuple(path[:end]))
                if line is not None:
                    return f"{source.name}:{line}"
        return self.sources[-1].name if self.sources else "<compose>"

    def describe(self, path: Path) -> str:
        """`file:line: service 'web', key 'ports[0]'` (or the top-level section and key)."""
        where = self.locate(path)
        if len(path) >= 2 and path[0] == "services":
            text = f"{where}: service {path[1]!r}"
            if len(path) > 2:
                text += f", key {format_key(path[2:])!r}"
            return text
        if len(path) >= 2:
            kind = str(path[0]).rstrip("s")
            text = f"{where}: {kind} {path[1]!r}"
            if len(path) > 2:
                text += f", key {format_key(path[2:])!r}"
            return text
        return f"{where}: key {format_key(path)!r}" if path else where

    def error(self, path: Path, message: str) -> None:
        """Record one problem at `path`; control characters in it are shown escaped."""
        self.errors.append(printable(f"{self.describe(path)}: {message}"))

    def raise_if_any(self) -> None:
        """Raise one ComposeError listing every problem recorded so far."""
        if self.errors:
            problems = list(dict.fromkeys(self.errors))
            head = "invalid Compose file" if len(problems) == 1 else \
                f"{len(problems)} problems in the Compose file"
            raise ComposeError(head + ":\n  " + "\n  ".join(problems), problems)
