"""Hiding the secrets a run knows from everything the worker writes or sends.

A secret rarely leaks as itself: ansible prints results as JSON (a PEM key's newlines become
`\\n`, a `"` becomes `\\"`, `é` may become `\\u00e9`), `to_json` escapes once more, `b64encode`
re-encodes it, a shell prints it with CRLF line endings, or one line of a key at a time. So each
secret is expanded once, when it becomes known, into the set of its *forms*:

- the secret, stripped of surrounding whitespace, and with LF and CRLF line endings;
- each of those JSON-escaped (ASCII-only or not), escaped twice (a `to_json` result printed as
  JSON), as Python's repr shows it, URL-encoded, and with its backslash escapes interpreted
  (`echo -e` of a password holding `\\n`);
- the base64 of each, in the standard and URL-safe alphabets, with and without padding, wrapped
  at 64 and 76 columns (PEM, the base64 command), and for a secret embedded in a longer base64
  text, the characters that encode only the secret's bytes at each of the three byte alignments;
  and the base64 of its JSON text (`to_json | b64encode`);
- each line of a multi-line secret longer than 8 characters, stripped, and JSON-escaped.

Values shorter than 4 characters are not masked (they would mangle ordinary text), nor base64
fragments shorter than 6.

Every form becomes one branch of a single compiled regular expression, built as a prefix tree so
that a scan costs a few comparisons per character however many forms there are, and the longest
form wins at each position. Occurrences of different forms that overlap are merged before they
are replaced, so no fragment of one survives next to the mask of another.

`mask_strings` walks a whole structure (an event, a repository log) and masks every string, keys
included, before anything is serialised. Serialising may still escape masked text into a form of
a secret that contains escapes (a password `a\\"b`, text `a"b`); each string is checked once more
as JSON would write it, and the characters that would make a form there are masked too.

Masking protects against accidents (a debug task, a verbose module, an error message). It cannot
stop a playbook that wants to disclose a secret it can read: it can transform it in ways no list
of forms foresees, or send it over the network.
"""
from __future__ import annotations

import base64
import codecs
import json
import re
import warnings
from itertools import groupby
from os.path import commonprefix
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

MASK = "********"
MIN_SECRET = 4  # shorter values would mangle ordinary text; they are not masked
MIN_LINE = 9  # lines of a multi-line secret masked on their own: longer than 8 characters
MIN_FRAGMENT = 6  # base64 characters of an embedded secret: fewer would match ordinary text
WRAP_WIDTHS = (64, 76)  # PEM's and MIME's (the base64 command's) line lengths
_URLSAFE = str.maketrans("+/", "-_")
_ESCAPED_BY_JSON = re.compile(r'["\\\x00-\x1f\x7f-\U0010ffff]')  # characters JSON may write as escapes


def _variants(secret: str) -> set[str]:
    """The secret as it may be printed whole: itself, stripped, with LF and with CRLF line endings."""
    found = {secret, secret.strip()}
    for value in list(found):
        if "\n" in value:
            found.add(value.replace("\r\n", "\n").replace("\n", "\r\n"))
            found.add(value.replace("\r\n", "\n"))
    return found


def _escaped(value: str) -> set[str]:
    """How serialisers write a string's characters: JSON (once and twice), repr, URL encoding."""
    once = {json.dumps(value, ensure_ascii=ascii_only)[1:-1] for ascii_only in (True, False)}
    twice = {json.dumps(text, ensure_ascii=ascii_only)[1:-1] for text in once for ascii_only in (True, False)}
    return once | twice | {repr(value)[1:-1], ascii(value)[1:-1], quote(value, safe=""), quote_plus(value, safe="")}


def _unescaped(value: str) -> set[str]:
    """A secret holding backslash escapes, as a shell's `echo -e` or a YAML double quote reads it."""
    if "\\" not in value:
        return set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # an unknown escape (\\q) is kept as it is
            return {codecs.decode(value.encode("latin-1", "backslashreplace"), "unicode_escape")}
    except (UnicodeDecodeError, ValueError):
        return set()


def _base64(data: bytes, embedded: bool) -> set[str]:
    """The base64 of `data` whole, and if `embedded`, also wrapped and as embedded at each byte
    alignment in a longer text."""
    whole = base64.b64encode(data).decode("ascii")
    found = {whole, whole.rstrip("=")}
    if not embedded:
        return found
    for width in WRAP_WIDTHS:
        found.update(whole[start:start + width] for start in range(0, len(whole), width))
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        # Character i encodes bits 6i..6i+5: keep those that lie within the secret's bytes.
        first, last = -(-8 * offset // 6), (8 * offset + 8 * len(data)) // 6
        found.add(encoded[first:last])
    return {form for form in found if len(form) >= MIN_FRAGMENT} | {whole}


def secret_forms(secret: str) -> set[str]:
    """Every form of one secret that is masked (see the module's docstring)."""
    if not secret or len(secret.strip()) < MIN_SECRET:
        return set()
    variants = _variants(secret)
    forms: set[str] = set()
    for variant in variants:
        forms |= {variant} | _escaped(variant) | _unescaped(variant)
    # base64 of the secret as printed whole (also within longer text), and of its JSON text
    # (`to_json | b64encode`, whole)
    as_json = {json.dumps(value, ensure_ascii=ascii_only) for value in variants for ascii_only in (True, False)}
    for value in variants | as_json:
        standard = _base64(value.encode("utf-8", "surrogatepass"), embedded=value in variants)
        forms |= standard | {form.translate(_URLSAFE) for form in standard}
    for line in secret.splitlines():
        line = line.strip()
        if len(line) >= MIN_LINE:
            forms |= {line} | _escaped(line)
    return {form for form in forms if len(form) >= MIN_SECRET}


def _trie_pattern(forms: Iterable[str]) -> str:
    """One regular expression matching any form, the longest at a position first: a prefix tree.

    Forms sharing a prefix share its branch, so the engine compares a few characters per position
    rather than trying every form; a form that ends where longer ones go on makes the rest
    optional and greedy, so the longest form that matches is taken.
    """
    def branch(group: list[str]) -> str:
        # `group`: sorted, distinct suffixes after some common prefix; "" if a form ends there.
        ends = group[0] == ""
        rest = group[1:] if ends else group
        branches = []
        for _, same_first in groupby(rest, key=lambda form: form[0]):
            members = list(same_first)
            prefix = commonprefix(members)
            branches.append(re.escape(prefix) + branch([form[len(prefix):] for form in members]))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return branch(sorted(set(forms)))


def _escape_map(text: str, ascii_only: bool) -> tuple[str, list[int]]:
    """`text` as JSON writes it inside a string, and where each of its characters starts there."""
    starts, pieces, position = [], [], 0
    for char in text:
        piece = json.dumps(char, ensure_ascii=ascii_only)[1:-1]
        starts.append(position)
        pieces.append(piece)
        position += len(piece)
    starts.append(position)
    return "".join(pieces), starts


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out)


class Masker:
    """Replaces every form of every known secret in text; callable on a string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.forms: frozenset[str] = frozenset()
        self._any: re.Pattern | None = None
        self._escape_sensitive: re.Pattern | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values too (each expanded into its forms)."""
        new = {value for value in secrets if isinstance(value, str) and value} - self._secrets
        if not new:
            return
        self._secrets |= new
        forms = set(self.forms)
        for secret in new:
            forms |= secret_forms(secret)
        self.forms = frozenset(forms)
        self._any = re.compile(f"(?=({_trie_pattern(forms)}))") if forms else None
        # Only a form holding a backslash can appear when text is JSON-escaped without being there before.
        escaping = [form for form in forms if "\\" in form]
        self._escape_sensitive = re.compile(f"(?=({_trie_pattern(escaping)}))") if escaping else None

    @staticmethod
    def _spans(pattern: re.Pattern, text: str) -> list[tuple[int, int]]:
        return _merge((found.start(), found.start() + len(found.group(1))) for found in pattern.finditer(text)
                      if found.group(1))

    def __call__(self, text: str) -> str:
        """`text` with every occurrence of a form replaced by ********."""
        if self._any is None or not text:
            return text
        for _ in range(4):
            spans = self._spans(self._any, text)
            if spans:
                text = _replace(text, spans)
            spans = self._escape_spans(text)
            if not spans:
                return text
            text = _replace(text, spans)
        return MASK  # masks keep making new forms (a secret made of asterisks): nothing of it is kept

    def _escape_spans(self, text: str) -> list[tuple[int, int]]:
        """The characters of `text` that would make a form once JSON-escaped."""
        if self._escape_sensitive is None or not _ESCAPED_BY_JSON.search(text):
            return []
        spans: list[tuple[int, int]] = []
        for ascii_only in (True,) if text.isascii() else (True, False):
            if not self._escape_sensitive.search(json.dumps(text, ensure_ascii=ascii_only)[1:-1]):
                continue
            escaped, starts = _escape_map(text, ascii_only)
            for start, end in self._spans(self._escape_sensitive, escaped):
                first = _char_at(starts, start)
                last = _char_at(starts, end - 1)
                spans.append((first, last + 1))
        return _merge(spans)

    def mask_strings(self, value: Any) -> Any:
        """`value` (dicts, lists, tuples, strings, anything else) with every string masked, keys too."""
        if self._any is None:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self._key(key): self.mask_strings(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_strings(item) for item in value]
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            # A number is kept unless it spells a secret (a numeric PIN), then it becomes the mask.
            text = str(value)
            return value if self(text) == text else self(text)
        return self(str(value))  # what a serialiser would write of anything else, masked first

    def _key(self, key: Any) -> Any:
        masked = self.mask_strings(key)
        return masked if isinstance(masked, (str, int, float, bool)) or masked is None else str(masked)


def _char_at(starts: list[int], position: int) -> int:
    """The index of the character whose escaped text covers `position` (starts: as _escape_map makes)."""
    low, high = 0, len(starts) - 2
    while low < high:
        middle = (low + high + 1) // 2
        if starts[middle] <= position:
            low = middle
        else:
            high = middle - 1
    return low
