"""Canonical JSON for ledger entries.

The bytes that get hashed must be the same on every machine and in every language, so a
verifier written elsewhere reaches the same hashes. We use the JSON Canonicalization Scheme
(RFC 8785) restricted to what entries contain — strings, integers, null, lists and objects —
for which it reduces to: object keys sorted by UTF-16 code units, no insignificant whitespace,
strings escaped as ECMAScript `JSON.stringify` does (only `"`, `\\` and control characters are
escaped; everything else is literal UTF-8), integers in shortest decimal form. Floats are
refused: entries carry none, and their RFC 8785 form is easy to get subtly wrong.
"""

from __future__ import annotations

import json
from typing import Any

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16_key(key: str) -> bytes:
    # RFC 8785 section 3.2.3: sort by UTF-16 code units, not by code points.
    return key.encode("utf-16-be")


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            msg = "canonical JSON object keys must be strings"
            raise TypeError(msg)
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    else:
        msg = f"canonical JSON cannot encode {type(value).__name__}"
        raise TypeError(msg)


def _fast_path_applies(value: Any) -> bool:
    """Whether the C `json` encoder gives the RFC 8785 bytes: no floats anywhere, and object
    keys that are ASCII (where code-point order and UTF-16 order agree). Ledger entries always
    qualify; anything else takes the careful encoder."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str) or not key.isascii():
                    return False
                stack.append(item)
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif node is not None and not isinstance(node, bool | int | str):
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of `value` (no floats)."""
    if _fast_path_applies(value):
        # Python's encoder with these options escapes exactly what ECMAScript's
        # JSON.stringify escapes (quote, backslash, control characters, with the short forms
        # for backspace, form feed, newline, return and tab), writes other characters as they
        # are, and sorts ASCII keys as RFC 8785 does. A property test holds both paths equal.
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")
