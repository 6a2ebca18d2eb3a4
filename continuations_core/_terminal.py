"""Making untrusted text inert before it reaches a terminal.

Tool names, args, reasons, agent names, ids, messages and comments can come from a model or
from whoever wrote to the store. Printed raw, an ANSI escape sequence can recolour, hide or
rewrite what a reviewer sees, a ``\\r`` can overwrite a line, and a bidirectional override can
reorder it. Every character that is not printable (Python's ``str.isprintable``: control
characters, format characters such as bidi overrides and zero-width marks, line and paragraph
separators, unassigned and private-use code points, lone surrogates) is shown escaped instead.
"""

from __future__ import annotations

__all__ = ["inert", "inert_json"]


def _escaped(char: str) -> str:
    # "\x1b", "\n", "\u202e", "\U000e0001": the way Python writes the character in a literal.
    return char.encode("unicode_escape", "backslashreplace").decode("ascii")


def _json_escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP, JSON spells a character as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def inert(text: str) -> str:
    """Return ``text`` with every non-printable character escaped, newlines included.

    Call it on each line (or field) separately: the line breaks a program adds itself are the
    only ones that should reach the terminal.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def inert_json(text: str) -> str:
    """Return JSON ``text`` with every non-printable character inside strings ``\\u``-escaped.

    The result is JSON that decodes to exactly the same value. Only the newlines between
    lines are kept: JSON text has no other raw non-printable characters outside strings, and
    inside strings ``json.dumps`` already escapes the C0 controls.
    """
    lines = text.split("\n")
    return "\n".join(
        line
        if line.isprintable()
        else "".join(c if c.isprintable() else _json_escaped(c) for c in line)
        for line in lines
    )
