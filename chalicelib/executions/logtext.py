"""The execution log's text, and where each event's output sits in it (no IO).

The log is the stdout of every event, in seq order, one line each, every attempt headed by a line
of its own, and the execution's outcome as the last line:

    ===== attempt 1 =====
    <stdout of an event>
    ...
    ===== FAILURE (attempt 1): reason =====

Offsets into it are UTF-8 byte offsets. The worker records, on each event it writes, the offset
where the event's stdout starts (`logOffset`), counting from `logStart` of the attempt (0 for the
first; for a restart, where the log stood when it was restarted). A reader can then find the
event holding any offset with a few one-item queries, instead of reading every event before it.
Stored offsets are authoritative: text between two events that is nowhere stored (a batch of
events that could not be written) is simply absent, and the offsets after it stay valid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from chalicelib.platform.paging import longest_prefix_within, wire_size


def attempt_header(attempt: int) -> str:
    """The line that heads an attempt's output."""
    return f"===== attempt {int(attempt)} =====\n"


def event_text(stdout: str | None) -> str:
    """An event's line(s) in the log ("" for an event without output)."""
    return f"{stdout}\n" if stdout else ""


def outcome_line(status: str, attempt: int, reason: str | None) -> str:
    """The last line: the execution's status as it is now."""
    line = f"===== {status} (attempt {int(attempt)})"
    return line + (f": {reason} =====\n" if reason else " =====\n")


def byte_length(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class Segment:
    """A stretch of the log's text and the byte offset where it starts."""

    start: int
    text: str


@dataclass(frozen=True)
class Chunk:
    """A bounded part of the log: its text, and the offset to ask next (None: this is the end)."""

    text: str
    next_offset: int | None


def event_segments(events: Iterable, previous_attempt: int | None) -> Iterator[Segment]:
    """Segments of events carrying stored offsets: a header where the attempt changes, then the stdout."""
    attempt = previous_attempt
    for event in events:
        offset = int(event.log_offset)
        if event.attempt != attempt:
            attempt = event.attempt
            header = attempt_header(attempt)
            yield Segment(offset - byte_length(header), header)
        yield Segment(offset, event_text(event.stdout))


def running_segments(events: Iterable) -> Iterator[Segment]:
    """Segments of events without stored offsets: positions counted from the first event on."""
    position, attempt = 0, None
    for event in events:
        if event.attempt != attempt:
            attempt = event.attempt
            header = attempt_header(attempt)
            yield Segment(position, header)
            position += byte_length(header)
        text = event_text(event.stdout)
        yield Segment(position, text)
        position += byte_length(text)


def cut(segments: Iterable[Segment], offset: int, budget: int) -> Chunk:
    """The text from byte `offset` on, at most `budget` bytes on the wire, whole characters only.

    An offset inside a character backs off to the character's first byte. Text that segments
    overlap (which stored offsets never should) is answered once; a gap is skipped.
    """
    parts: list[str] = []
    spent = 0
    position = offset
    first = True
    for segment in segments:
        data = segment.text.encode("utf-8")
        end = segment.start + len(data)
        if end <= position or not data:
            continue
        begin = max(position, segment.start)
        if first:
            while begin > segment.start and (data[begin - segment.start] & 0xC0) == 0x80:
                begin -= 1  # a continuation byte: start at the character's first byte
            first = False
        text = data[begin - segment.start:].decode("utf-8")
        size = wire_size(text)
        if spent + size <= budget:
            parts.append(text)
            spent += size
            position = end
            continue
        kept = longest_prefix_within(text, budget - spent)
        parts.append(kept)
        return Chunk("".join(parts), begin + byte_length(kept))
    return Chunk("".join(parts), None)
