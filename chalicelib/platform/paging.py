"""Bounded answers: list cursors, and the size an answer takes in a Lambda response (no IO).

A list is answered a page at a time (`?page=N&size=M`, the reference's paging). DynamoDB cannot
jump to the N-th item of a query without reading the N-1 before it, so each page answered also
carries a cursor (header `X-Runner-Next-Cursor`) that starts the next one where this one ended:
a client that passes it back (`?cursor=...`) makes each page read only itself.

API Gateway gets the API's answer from Lambda as a JSON document whose `body` is a string, and
Lambda refuses a response over 6 MB *as that document*: quotes, backslashes and control
characters of the body are escaped once more there, and a non-ASCII character may become a
six-character `\\u` escape.
`wire_size` is that size, and MAX_RESPONSE_BYTES bounds it for every answer that could grow.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from chalicelib.platform.errors import InvalidRequest

MAX_RESPONSE_BYTES = 5 * 1024 * 1024  # below Lambda's 6 MB, with room for headers
CURSOR_HEADER = "X-Runner-Next-Cursor"
MAX_CURSOR_CHARS = 1024


def wire_size(text: str) -> int:
    """Bytes `text` takes as a JSON string in Lambda's response (the worst of ASCII or UTF-8 output)."""
    return len(json.dumps(text)) - 2


def json_wire_size(document: object) -> int:
    """Bytes a JSON body takes in Lambda's response (Chalice serializes it as here)."""
    return wire_size(json.dumps(document, separators=(",", ":")))


def longest_prefix_within(text: str, budget: int) -> str:
    """The longest prefix of `text` (whole characters) whose wire size is at most `budget`."""
    if wire_size(text) <= budget:
        return text
    low, high = 0, min(len(text), budget)  # a character costs at least one byte
    while low < high:
        middle = (low + high + 1) // 2
        if wire_size(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


@dataclass(frozen=True)
class PageRequest:
    """What a list request asks: the page, its size, and where it starts when a cursor says so."""

    page: int
    size: int
    after: tuple | None = None  # the sort-key values of the last item of the previous page


@dataclass
class Page:
    """A list answer: the body (the reference's shape) and the cursor of the next page, if any."""

    body: dict
    next_cursor: str | None = None
    headers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.next_cursor:
            self.headers[CURSOR_HEADER] = self.next_cursor


def encode_cursor(page: int, size: int, after: tuple) -> str:
    """The opaque cursor of page `page` (of `size` items), starting after the item `after`."""
    raw = json.dumps({"p": page, "s": size, "a": list(after)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_cursor(raw: str) -> tuple[int, int, tuple[str, int]]:
    """(page, size, (item id, createdTime)) of a cursor this module made; InvalidRequest otherwise."""
    bad = InvalidRequest("cursor", "is not a cursor this service answered (X-Runner-Next-Cursor); "
                                   "ask the first page again")
    if not isinstance(raw, str) or not raw or len(raw) > MAX_CURSOR_CHARS:
        raise bad
    try:
        document = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if not isinstance(document, dict) or set(document) != {"p", "s", "a"}:
        raise bad
    page, size, after = document["p"], document["s"], document["a"]
    if not (_is_int(page) and _is_int(size) and isinstance(after, list) and len(after) == 2):
        raise bad
    item_id, created = after
    if not (isinstance(item_id, str) and 0 < len(item_id) <= 256 and _is_int(created)):
        raise bad
    return page, size, (item_id, created)


def page_request(page: int | None, size: int | None, cursor: str | None, default_size: int) -> PageRequest:
    """Combine `page`/`size` (None when not sent) with a cursor: a cursor names its own page and size."""
    if cursor is None:
        return PageRequest(page or 0, size or default_size)
    cursor_page, cursor_size, after = decode_cursor(cursor)
    if page is not None and page != cursor_page:
        raise InvalidRequest("cursor", f"continues to page {cursor_page}, not page {page}")
    if size is not None and size != cursor_size:
        raise InvalidRequest("cursor", f"continues pages of size {cursor_size}, not {size}")
    return PageRequest(cursor_page, cursor_size, after)
