"""Text that is safe to print on a terminal: control characters shown as escapes, never sent raw.

Prompts, project and style names come from users (and from files other tools wrote). Printed as they
are, an ESC sequence in one of them clears the screen, retitles the window or hides text, and a
Unicode bidi override reorders what the reader sees. `safe_text` replaces every such character with a
visible Python-style escape (`\\x1b`, `\\n`, `\\u202e`); everything else, including non-ASCII letters
and emoji (with their zero-width joiners), is left alone. Backslashes are not doubled: the output is
for people, not for parsing.

`safe_json` does the same for a JSON document: it escapes the characters `json.dumps(...,
ensure_ascii=False)` leaves raw (DEL, the C1 controls, U+2028/U+2029 and the bidi controls) as
`\\uXXXX`, which keeps the document valid JSON with the same meaning.
"""

from __future__ import annotations

__all__ = ["safe_json", "safe_text"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidi embedding/override/isolate marks (the "Trojan Source" characters), line/paragraph separators.
_UNICODE_CONTROLS = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]


def _escape(code: int) -> str:
    char = chr(code)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_TABLE: dict[int, str] = {c: _escape(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0), *_UNICODE_CONTROLS]}
_TABLE_KEEP_NEWLINES = {c: e for c, e in _TABLE.items() if c != ord("\n")}
_JSON_TABLE: dict[int, str] = {c: f"\\u{c:04x}" for c in [*range(0x7F, 0xA0), *_UNICODE_CONTROLS]}


def safe_text(s: str, *, newlines: bool = False) -> str:
    """`s` with control characters replaced by visible escapes (`"\\x1b[2J"` -> `"\\\\x1b[2J"`).

    With `newlines=True`, line breaks are kept (for multi-line text such as an infotext); every other
    control character is still escaped. Non-strings are converted with `str()` first.
    """
    text = s if isinstance(s, str) else str(s)
    return text.translate(_TABLE_KEEP_NEWLINES if newlines else _TABLE)


def safe_json(document: str) -> str:
    """A JSON document (from `json.dumps(..., ensure_ascii=False)`) with the raw control characters
    it may still contain escaped as `\\uXXXX`; still valid JSON, same value."""
    return document.translate(_JSON_TABLE)
