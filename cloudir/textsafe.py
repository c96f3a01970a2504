"""Printing data as text: every value from a log, a finding or a cloud API goes through here before a terminal.

Values are attacker-chosen. ``visible`` shows control and invisible formatting characters as escapes
(``\\x1b``, ``\\n``, ``\\u202e``) so that a value can neither move the cursor, clear the screen, open a
hyperlink, fake extra lines, nor reorder text. ``esc`` also escapes Rich console markup, for values placed
inside the tool's own markup. The consoles made by ``text_console`` never turn ``:name:`` into emoji and
never colour data by guessing its type.
"""

from __future__ import annotations

import unicodedata

from rich.console import Console
from rich.markup import escape

# Cc: C0/C1 controls (ESC, BEL, CR, LF, TAB, DEL, CSI); Cf: invisible formatting (bidi overrides,
# zero-width joiners); Zl/Zp: line and paragraph separators; Co/Cn: private use and unassigned.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cn"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(value: object) -> str:
    """``value`` as one line of plain text: control and invisible characters shown as escapes."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(
        _shown(char) if char != " " and unicodedata.category(char) in _HIDDEN_CATEGORIES else char for char in text
    )


def esc(value: object) -> str:
    """``value`` ready to interpolate into Rich markup: shown as ``visible`` text, markup escaped."""
    return escape(visible(value))


def text_console(*, stderr: bool = False) -> Console:
    """A console for the tool's own markup with data interpolated through ``esc``: no emoji codes, no highlighting."""
    return Console(stderr=stderr, emoji=False, highlight=False)


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A text cell for CSV: shown as ``visible`` text, and a leading formula character neutralized (OWASP)."""
    shown = visible(value)
    return f"'{shown}" if value.startswith(_FORMULA_STARTS) else shown


def markdown_cell(value: str) -> str:
    """A text cell for a Markdown table: ``visible`` text (newlines as ``\\n``) with ``|`` escaped."""
    return visible(value).replace("|", "\\|")
