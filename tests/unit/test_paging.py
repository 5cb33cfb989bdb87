"""Cursors, wire sizes and log chunks (chalicelib/platform/paging.py, chalicelib/executions/logtext.py)."""
from __future__ import annotations

import json

import pytest

from chalicelib.executions.logtext import Segment, cut
from chalicelib.platform.errors import InvalidRequest
from chalicelib.platform.paging import (
    decode_cursor, encode_cursor, longest_prefix_within, page_request, wire_size,
)
from chalicelib.platform.web import list_params, offset_param


def test_the_wire_size_is_the_text_escaped_as_a_json_string():
    assert wire_size("abc") == 3
    assert wire_size('a"b\\') == 6
    assert wire_size("é€") == 12 and wire_size("😀") == 12
    assert wire_size("\n\x01") == 2 + 6
    body = json.dumps({"a": "é"}, separators=(",", ":"))
    assert wire_size(body) == len(json.dumps(body)) - 2


def test_the_longest_prefix_within_a_budget_keeps_whole_characters():
    text = "ab😀cd"
    assert longest_prefix_within(text, 100) == text
    assert longest_prefix_within(text, 13) == "ab"
    assert longest_prefix_within(text, 14) == "ab😀"
    assert longest_prefix_within(text, 0) == ""


def test_a_cursor_names_its_page_size_and_item():
    cursor = encode_cursor(3, 20, ("e-1", 1_700_000_000_000))
    assert decode_cursor(cursor) == (3, 20, ("e-1", 1_700_000_000_000))
    assert page_request(None, None, cursor, 100).page == 3
    assert page_request(3, 20, cursor, 100).after == ("e-1", 1_700_000_000_000)
    with pytest.raises(InvalidRequest) as refused:
        page_request(4, None, cursor, 100)
    assert refused.value.field == "cursor"
    assert list_params({"page": "2"}).page == 2 and list_params({}).size == 100


@pytest.mark.parametrize("raw", ["", "nope", "e30", encode_cursor(1, 2, ("x", 1)) + "x",
                                 "W10", "eyJwIjoxLCJzIjoyLCJhIjpbIngiLCIxIl19"])
def test_what_is_not_a_cursor_is_refused_naming_cursor(raw):
    with pytest.raises(InvalidRequest) as refused:
        list_params({"cursor": raw})
    assert refused.value.field == "cursor"


def test_a_cursor_out_of_the_page_ranges_is_refused():
    with pytest.raises(InvalidRequest):
        list_params({"cursor": encode_cursor(0, 1000, ("x", 1))})


@pytest.mark.parametrize("raw", ["-1", "x", "1.5", str(2**53 + 1)])
def test_a_bad_offset_is_refused_naming_offset(raw):
    with pytest.raises(InvalidRequest) as refused:
        offset_param({"offset": raw})
    assert refused.value.field == "offset"


def test_chunks_of_segments_rejoin_into_the_text_whatever_the_budget():
    text = "===== attempt 1 =====\n" + "aé€😀\"\n" * 50 + "===== SUCCESS (attempt 1) =====\n"
    segments = [Segment(0, text[:22]), Segment(22, text[22:200]), Segment(len(text[:200].encode()), text[200:])]
    for budget in (13, 40, 97, 10_000):
        parts, offset = [], 0
        while offset is not None:
            chunk = cut(segments, offset, budget)
            assert wire_size(chunk.text) <= budget
            parts.append(chunk.text)
            offset = chunk.next_offset
        assert "".join(parts) == text


def test_an_offset_inside_a_character_backs_off_and_gaps_are_skipped():
    segments = [Segment(0, "a😀b\n"), Segment(20, "after a gap\n")]
    assert cut(segments, 2, 1000).text == "😀b\nafter a gap\n"
    assert cut(segments, 5, 1000).text == "b\nafter a gap\n"
    assert cut(segments, 12, 1000).text == "after a gap\n"
    assert cut(segments, 32, 1000).text == "" and cut(segments, 32, 1000).next_offset is None
