"""Text that came from outside (certificate names, server messages) made safe for one line of a log or
a terminal: controls, bidi overrides and line separators escaped, length cut. Pure."""

from __future__ import annotations

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _printable(char: str) -> str:
    """``char`` itself, or an escape for what a terminal would act on (controls, bidi overrides...)."""
    if char.isprintable():
        return char
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_controls(text: str) -> str:
    """``text`` with every character that is not printable (``str.isprintable``) escaped."""
    return text if text.isprintable() else "".join(map(_printable, text))


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) > limit:
        return text[:limit] + f"...({len(text) - limit} more characters)"
    return text
