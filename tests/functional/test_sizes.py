"""Bounded work and bounded answers: host lists, list pages, the log in chunks, events pages.

Costs are asserted as DynamoDB items read (counted from the responses, through a botocore hook on
the clients the app uses), never as durations.
"""
from __future__ import annotations

import json
import math

import pytest

from chalicelib.platform import aws, models
from chalicelib.platform.models import MODELS, Execution, ExecutionEvent, Job, JobExecutionCount, User
from chalicelib.platform.paging import CURSOR_HEADER, MAX_RESPONSE_BYTES, wire_size
from chalicelib.platform.wiring import execution_service
from runner_lambda.reporting import EventSink, Masker

LOG_NEXT = "X-Runner-Log-Next-Offset"
REPOSITORY = {"url": "https://example.com/playbooks.git", "defaultPlaybook": "site.yml"}
# One, two, three and four UTF-8 bytes, and two characters JSON escapes: 12 bytes, 29 on the wire.
MIXED = 'aé€😀"\n'


def job_body(hosts: int = 1) -> dict:
    return {"repository": REPOSITORY, "hosts": [{"id": f"host-{index}"} for index in range(hosts)]}


def new_job(client, hosts: int = 1) -> dict:
    answer = client.post("/jobs/DEMO", job_body(hosts))
    assert answer.status == 201, answer.body
    return answer.body[0]


class Reads:
    """DynamoDB items read by the requests made inside `counting()`, and the calls that read them."""

    def __init__(self) -> None:
        self.items = 0
        self.calls: list[str] = []
        self.active = False

    def __call__(self, parsed: dict, model, **_: object) -> None:
        if not self.active:
            return
        self.calls.append(model.name)
        if model.name in ("Query", "Scan"):
            self.items += int(parsed.get("ScannedCount", 0))
        elif model.name == "GetItem":
            self.items += 1 if parsed.get("Item") else 0
        elif model.name == "BatchGetItem":
            self.items += sum(len(items) for items in (parsed.get("Responses") or {}).values())

    def measure(self, request):
        self.items, self.calls, self.active = 0, [], True
        try:
            answer = request()
        finally:
            self.active = False
        return answer, self.items


@pytest.fixture
def reads(client) -> Reads:
    counter = Reads()
    models.bind()
    # Not the users table's: the authorizer's read of the token's user is not the route's.
    clients = {id(c): c for c in [model._get_connection().connection.client for model in MODELS
                                  if model is not User] + [models.connection().client, aws.client("dynamodb")]}
    for botocore_client in clients.values():
        botocore_client.meta.events.register("after-call.dynamodb", counter)
    yield counter
    for botocore_client in clients.values():
        botocore_client.meta.events.unregister("after-call.dynamodb", counter)


# --- hosts ---------------------------------------------------------------------------------------

def test_a_job_and_a_start_hold_at_most_2000_hosts_each_once(client):
    refused = client.post("/jobs/DEMO", job_body(2001))
    assert refused.status == 400 and refused.body["field"] == "hosts"
    assert "2000" in refused.body["message"]
    accepted = client.post("/jobs/DEMO", job_body(2000))
    assert accepted.status == 201 and len(accepted.body[0]["hosts"]) == 2000
    job = new_job(client)
    hosts = [{"id": f"web-{index}"} for index in range(2001)]
    refused = client.post(f"/jobs/DEMO/{job['id']}/start", {"hosts": hosts})
    assert refused.status == 400 and refused.body["field"] == "hosts"
    # Past the limit nothing is looked at: not even what would be refused otherwise.
    refused = client.post(f"/jobs/DEMO/{job['id']}/start", {"hosts": hosts[:2000] + [{"id": "bad id"}]})
    assert refused.status == 400 and refused.body["field"] == "hosts"
    duplicate = client.post(f"/jobs/DEMO/{job['id']}/start", {"hosts": hosts[:1999] + [{"id": "web-7"}]})
    assert duplicate.status == 400 and duplicate.body["field"] == "hosts[1999].id"
    started = client.post(f"/jobs/DEMO/{job['id']}/start", {"hosts": hosts[:2000]})
    assert started.status == 201 and len(started.body["hosts"]) == 2000


# --- list pages ----------------------------------------------------------------------------------

def put_executions(job_id: str, count: int, first_time: int = 1_700_000_000_000) -> None:
    """Executions stored (and counted) as a start stores them, without dispatching them."""
    for index in range(count):
        execution = Execution(job_id, f"00000000-0000-4000-8000-{index:012d}", account_alias="DEMO",
                              created_time=first_time + index, status="SUCCESS", attempt=1, timers=[],
                              target_hosts=["host-0"], failed_hosts=[], log_start=0)
        execution_service()._put_counted(execution, "DEMO", chosen=False)


def walk(client, path: str, size: int, reads: Reads) -> tuple[list[dict], list[int]]:
    """Every page, each asked with the cursor the previous one answered; and what each read."""
    pages, costs, cursor = [], [], None
    while True:
        query = f"?cursor={cursor}" if cursor else f"?page=0&size={size}"
        answer, items = reads.measure(lambda: client.get(f"{path}{query}"))
        assert answer.status == 200, answer.body
        pages.append(answer.body)
        costs.append(items)
        cursor = answer.headers.get(CURSOR_HEADER)
        if cursor is None:
            return pages, costs


def test_each_page_of_executions_reads_only_itself_when_asked_with_its_cursor(client, reads):
    job = new_job(client)
    started = [client.post(f"/jobs/DEMO/{job['id']}/start", {}).body["execution_id"] for _ in range(2)]
    put_executions(job["id"], 38)
    path = f"/jobs/DEMO/{job['id']}/executions"
    pages, costs = walk(client, path, 4, reads)
    assert [page["page"] for page in pages] == list(range(10))
    assert all(page["totalSize"] == 40 and page["size"] == 4 for page in pages)
    # Every page read its own 4 executions and the job's item, whichever page it was.
    assert costs == [5] * 10
    listed = [execution["execution_id"] for page in pages for execution in page["results"]]
    assert len(set(listed)) == 40 and listed[:2] == started[::-1]  # started now: the newest
    # The same pages, asked by number alone (the reference's way), hold the same executions.
    for number in (0, 3, 9):
        by_number = client.get(f"{path}?page={number}&size=4")
        assert by_number.body == pages[number]
    beyond = client.get(f"{path}?page=10&size=4")
    assert beyond.body == {"totalSize": 40, "page": 10, "size": 0, "results": []}
    assert CURSOR_HEADER not in beyond.headers
    # Newest first across pages of another size; the last one is short and has no cursor.
    pages, _ = walk(client, path, 7, reads)
    times = [execution["created_time"] for page in pages for execution in page["results"]]
    assert times == sorted(times, reverse=True) and [page["size"] for page in pages] == [7] * 5 + [5]
    # A cursor names its page and size: asking another one with it, or a made-up one, is a 400.
    cursor = client.get(f"{path}?size=2").headers[CURSOR_HEADER]
    assert client.get(f"{path}?cursor={cursor}&page=1&size=2").body["size"] == 2
    for query in (f"cursor={cursor}&page=2", f"cursor={cursor}&size=3", "cursor=nope", "cursor=eyJwIjoxfQ",
                  "cursor=" + "A" * 2000):
        answer = client.get(f"{path}?{query}")
        assert answer.status == 400 and answer.body["field"] == "cursor", query


def test_a_job_stored_before_counts_were_kept_is_counted_once_then_kept(client, reads):
    job = new_job(client)
    put_executions(job["id"], 5)
    JobExecutionCount("DEMO", job["id"]).update(actions=[JobExecutionCount.execution_count.remove()])
    assert Job.get("DEMO", job["id"]).execution_count is None
    path = f"/jobs/DEMO/{job['id']}/executions"
    first, counting = reads.measure(lambda: client.get(f"{path}?size=2"))
    assert first.body["totalSize"] == 5 and counting > 3  # counted them all, once
    assert Job.get("DEMO", job["id"]).execution_count == 5
    assert client.post(f"/jobs/DEMO/{job['id']}/start", {}).status == 201
    again, kept = reads.measure(lambda: client.get(f"{path}?size=2"))
    assert again.body["totalSize"] == 6 and kept == 3
    # A start counts itself without moving the job's version (a PUT keeping secrets checks it).
    version = Job.get("DEMO", job["id"]).version
    assert client.post(f"/jobs/DEMO/{job['id']}/start", {}).status == 201
    stored = Job.get("DEMO", job["id"])
    assert stored.version == version and stored.execution_count == 7


def test_each_page_of_jobs_reads_only_itself_when_asked_with_its_cursor(client, reads):
    created = [new_job(client)["id"] for _ in range(7)]
    pages, costs = walk(client, "/jobs/DEMO", 2, reads)
    assert [page["size"] for page in pages] == [2, 2, 2, 1]
    assert [job["id"] for page in pages for job in page["results"]] == created[::-1]
    assert costs == [3, 3, 3, 2]  # the account's count, and the page's own jobs
    assert client.get("/jobs/DEMO?page=2&size=2").body == pages[2]


# --- the log, in chunks --------------------------------------------------------------------------

def expected_log(attempts: list[list[str]], status: str, reason: str) -> str:
    """The log as the route always answered it whole (independent of chalicelib/executions/logtext.py)."""
    lines: list[str] = []
    for number, outputs in enumerate(attempts, 1):
        lines.append(f"===== attempt {number} =====")
        lines.extend(output for output in outputs if output)
    lines.append(f"===== {status} (attempt {len(attempts)}): {reason} =====")
    return "\n".join(lines) + "\n"


def write_events(execution_id: str, attempt: int, outputs: list[str], offsets: bool = True) -> None:
    """Events as the worker writes them (EventSink), or, without offsets, as it did before."""
    if offsets:
        log_start = Execution.get(job_of[execution_id], execution_id, consistent_read=True).log_start
        sink = EventSink(execution_id, attempt, Masker([]), 1, flush_seconds=60, log_start=log_start)
        for counter, output in enumerate(outputs, 1):
            sink.add({"event": "verbose", "counter": counter, "stdout": output, "event_data": {}})
        sink.close()
        return
    with ExecutionEvent.batch_write() as writer:
        for counter, output in enumerate(outputs, 1):
            writer.save(ExecutionEvent(execution_id, attempt * 1_000_000 + counter, attempt=attempt,
                                       event="verbose", stdout=output))


job_of: dict[str, str] = {}


def started_execution(client) -> tuple[dict, str]:
    job = new_job(client)
    execution = client.post(f"/jobs/DEMO/{job['id']}/start", {}).body
    job_of[execution["execution_id"]] = job["id"]
    return execution, f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}"


def end(execution: dict, reason: str = "chosen to fail") -> None:
    Execution(execution["job_id"], execution["execution_id"]).update(
        actions=[Execution.status.set("FAILURE"), Execution.status_reason.set(reason)])


def read_log(client, path: str, reads: Reads | None = None) -> tuple[list[str], list[int], list[int]]:
    """Every chunk of the log from offset 0, each checked to fit a Lambda response; and the offsets asked."""
    chunks, offsets, costs, offset = [], [], [], 0
    while True:
        if reads is not None:
            answer, items = reads.measure(lambda: client.get(f"{path}/log?offset={offset}"))
            costs.append(items)
        else:
            answer = client.get(f"{path}/log?offset={offset}")
        assert answer.status == 200, answer.body
        text = answer.raw.decode("utf-8")  # strict: a chunk never holds part of a character
        assert len(answer.raw) <= MAX_RESPONSE_BYTES and wire_size(text) <= MAX_RESPONSE_BYTES
        chunks.append(text)
        offsets.append(offset)
        following = answer.headers.get(LOG_NEXT)
        if following is None:
            return chunks, offsets, costs
        assert int(following) == offset + len(answer.raw)
        offset = int(following)


def big_outputs(count: int, characters: int = 30_000) -> list[str]:
    """`count` outputs of `characters` characters, mostly multi-byte ones, each a little different."""
    return [(f"{index:05d}" + MIXED * characters)[:characters] for index in range(count)]


def test_a_log_larger_than_5_mb_comes_in_chunks_that_reassemble_exactly(client, reads):
    execution, path = started_execution(client)
    outputs = big_outputs(150) + [""] + ["last line"]
    write_events(execution["execution_id"], 1, outputs)
    end(execution)
    expected = expected_log([outputs], "FAILURE", "chosen to fail")
    assert len(expected.encode()) > 5 * 1024 * 1024
    chunks, offsets, costs = read_log(client, path, reads)
    assert len(chunks) >= 3 and "".join(chunks) == expected
    # Chunks end inside runs of multi-byte characters, and never split one.
    boundaries = [len("".join(chunks[:index]).encode()) for index in range(1, len(chunks))]
    assert offsets[1:] == boundaries
    neighbours = [expected[len("".join(chunks[:index])) - 1:][:2] for index in range(1, len(chunks))]
    assert any(len(pair.encode()) > 2 for pair in neighbours), neighbours
    # Each chunk read the events it holds (about 30 of 152), its first one found with one-item
    # queries (the execution, the last and first events, a bisection over seq), and at most one more.
    probes = 3 + math.ceil(math.log2(len(outputs)))
    for chunk, cost in zip(chunks, costs):
        held = sum(1 for output in outputs if output and output[:5] in chunk) + 1  # + the one it starts in
        assert cost <= held + probes + 1, (cost, held, costs)
    assert max(costs) < len(outputs) // 3


def test_a_restart_continues_the_logs_offsets_and_old_events_without_offsets_chunk_too(client):
    execution, path = started_execution(client)
    first = big_outputs(40, 20_000)
    write_events(execution["execution_id"], 1, first)
    end(execution)
    assert client.post(f"{path}/restart", {}).status == 202
    second = ["second attempt"] + big_outputs(40, 20_000)
    write_events(execution["execution_id"], 2, second)
    end(execution, "again")
    chunks, _, _ = read_log(client, path)
    assert len(chunks) >= 2 and "".join(chunks) == expected_log([first, second], "FAILURE", "again")
    # Events written before offsets were kept: counted from the first event, chunked the same way.
    execution, path = started_execution(client)
    outputs = big_outputs(80)
    write_events(execution["execution_id"], 1, outputs, offsets=False)
    end(execution)
    chunks, _, _ = read_log(client, path)
    assert len(chunks) >= 2 and "".join(chunks) == expected_log([outputs], "FAILURE", "chosen to fail")


def test_offsets_inside_a_character_back_off_bad_ones_are_400_the_end_is_empty(client):
    execution, path = started_execution(client)
    answer = client.get(f"{path}/log")  # no event yet: the outcome alone
    assert answer.raw.decode() == "===== PENDING (attempt 1) =====\n" and LOG_NEXT not in answer.headers
    outputs = ["plain " + MIXED * 3]
    write_events(execution["execution_id"], 1, outputs)
    end(execution)
    whole = expected_log([outputs], "FAILURE", "chosen to fail").encode()
    emoji = whole.index("😀".encode())
    for inside in (emoji + 1, emoji + 2, emoji + 3):
        answer = client.get(f"{path}/log?offset={inside}")
        assert answer.status == 200 and answer.raw == whole[emoji:] and LOG_NEXT not in answer.headers
    header = len(b"===== attempt 1 =====\n")
    assert client.get(f"{path}/log?offset={header}").raw == whole[header:]
    assert client.get(f"{path}/log?offset=3").raw == whole[3:]
    assert client.get(f"{path}/log").raw == whole
    at_end = client.get(f"{path}/log?offset={len(whole)}")
    assert at_end.status == 200 and at_end.raw in (b"", None) and LOG_NEXT not in at_end.headers
    for bad in (len(whole) + 1, -1, "abc", "1.5", 2**60):
        answer = client.get(f"{path}/log?offset={bad}")
        assert answer.status == 400 and answer.body["field"] == "offset", (bad, answer.body)


# --- events pages ----------------------------------------------------------------------------------

def test_an_events_page_stops_before_5_mb_and_next_goes_on(client):
    execution, path = started_execution(client)
    huge = "😀" * 90_000  # 360 KB stored, about 1.26 MB in a Lambda response
    with ExecutionEvent.batch_write() as writer:
        for counter in range(1, 13):
            writer.save(ExecutionEvent(execution["execution_id"], 1_000_000 + counter, attempt=1,
                                       event="verbose", stdout=f"{counter}:{huge}"))
    seen, after, pages = [], -1, 0
    while True:
        answer = client.get(f"{path}/events?after={after}&size=1000")
        assert answer.status == 200
        assert wire_size(answer.raw.decode()) <= MAX_RESPONSE_BYTES
        page = answer.body
        pages += 1
        assert page["size"] == len(page["results"]) < 12
        seen += [event["seq"] for event in page["results"]]
        assert all(event["stdout"].endswith(huge) for event in page["results"])
        if page["next"] is None:
            break
        assert page["next"] == page["results"][-1]["seq"]
        after = page["next"]
    assert seen == [1_000_000 + counter for counter in range(1, 13)] and pages >= 3
    # Small events fill the page they are asked for, as before.
    execution, path = started_execution(client)
    write_events(execution["execution_id"], 1, [f"line {index}" for index in range(5)])
    page = client.get(f"{path}/events?size=2").body
    assert page["size"] == 2 and page["next"] == page["results"][-1]["seq"]
    rest = client.get(f"{path}/events?after={page['next']}&size=10").body
    assert rest["size"] == 3 and rest["next"] is None
    assert json.dumps(rest["results"][0]["stdout"]) == '"line 2"'
