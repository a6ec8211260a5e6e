"""Hostile text made safe to print: job scripts and environments are written by users, and
nothing of theirs may reach a terminal as a control character or an escape sequence (an
`ESC ] 0 ; ... BEL` retitles the window, `ESC [ 2 J` clears it). Pure functions."""

from __future__ import annotations

# Shown as escapes rather than passed: C0 controls, DEL, C1 controls (0x9b is a one-byte CSI
# on some terminals), and the bidirectional overrides and isolates that reorder what is shown.
_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\e", "\\": "\\\\"}


def _unsafe(code: int) -> bool:
    return code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or code in _BIDI


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def decode(data: bytes) -> str:
    """Bytes as text, undecodable bytes kept (as surrogates) so that they show as \\xNN."""
    return data.decode("utf-8", "surrogateescape")


def safe_text(text: str) -> str:
    """Multi-line text (a script) for a terminal: newlines and tabs kept, every other control
    character, escape and undecodable byte shown as a visible escape (\\e, \\r, \\x07, \\xe9)."""
    return "".join(_escape(c) if (_unsafe(ord(c)) and c not in "\n\t")
                   or 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def safe_line(text: str) -> str:
    """One-line text (a value, a name) with nothing hidden and nothing ambiguous: newlines,
    tabs and backslashes escaped as well, so a multi-line value reads back unambiguously."""
    return "".join(_escape(c) if _unsafe(ord(c)) or c == "\\" or 0xDC80 <= ord(c) <= 0xDCFF
                   else c for c in text)


def safe_bytes(data: bytes) -> str:
    return safe_text(decode(data))
