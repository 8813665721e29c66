"""The README, read by the tests that keep it true."""

from __future__ import annotations

from harness.processes import REPO


def readme_section(start: str, end: str = "\n**") -> str:
    """The README from the line starting with `start` up to the next `end` (a paragraph heading by default)."""
    text = (REPO / "README.md").read_text()
    first = text.index(start)
    return text[first:text.index(end, first + 1)]
