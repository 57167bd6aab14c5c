"""Which S3 object keys a slide may have: the checks ingest applies to every key it is told
about (notifications, assembled series, series manifests) before any GET.

S3 itself accepts any UTF-8 key, but keys end up as paths (cuCIM's temporary copy, the
CLI's local output names, operators' `aws s3 cp` scripts) and in logs, so a key that is,
or turns into, a path outside its prefix is refused rather than read:

- empty, over S3's 1,024 bytes, or ending in `/` (not a file);
- `.` or `..` segments, empty segments (`a//b`), a leading `/` (absolute path), a backslash;
- control, format (zero-width, bidi overrides) or unassigned-surrogate characters, NUL;
- U+FFFD: the notification's percent-encoding was not valid UTF-8 (overlong `%C0%AE`);
- a key that would break one of those rules after more URL-decoding (`%2e%2e`, `%2f`,
  `%5c`, `%00`, and nested: `%252e%252e`, decoded until it stops changing) or after Unicode
  NFKC normalisation of any of those forms (fullwidth `．．／`, the one-dot leader, division
  and fraction slashes), since tools on the way may apply either, more than once;
- a key still changing after MAX_DECODES more decodings (nesting no scanner writes).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

__all__ = ["MAX_DECODES", "MAX_KEY_BYTES", "key_problem"]

MAX_KEY_BYTES = 1024
MAX_DECODES = 8
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _structural_problem(key: str) -> str | None:
    if "\\" in key:
        return "backslash in the key"
    if key.startswith("/"):
        return "absolute path"
    segments = key.split("/")
    if any(s in (".", "..") for s in segments):
        return "dot segment in the key"
    if any(s == "" for s in segments[:-1]):
        return "empty path segment in the key"
    for ch in key:
        if ch == "\ufffd":
            return "the key is not valid UTF-8"
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return "control or format character in the key"
    return None


def key_problem(key: str) -> str | None:
    """Why `key` (already URL-decoded once, as notifications carry it) is refused, or None.
    The reason names the rule, never the key: keys may carry identifiers."""
    if not key:
        return "empty key"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"key longer than {MAX_KEY_BYTES} bytes"
    if key.endswith("/"):
        return "the key names a folder, not a file"
    problem = _structural_problem(key)
    if problem is not None:
        return problem
    decoded = [key]
    while len(decoded) <= MAX_DECODES and unquote(decoded[-1]) != decoded[-1]:
        decoded.append(unquote(decoded[-1]))
    if unquote(decoded[-1]) != decoded[-1]:
        return f"the key is URL-encoded more than {MAX_DECODES} levels deep"
    for form in decoded[1:]:
        if _structural_problem(form) is not None:
            return "the key turns into a path trick after URL-decoding"
    for form in decoded:
        normal = unicodedata.normalize("NFKC", form)
        if normal != form and _structural_problem(normal) is not None:
            return "the key turns into a path trick after NFKC"
    return None
