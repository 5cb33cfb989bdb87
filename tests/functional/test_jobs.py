"""The Jobs resource through the gateway: CRUD, paging, secrets, consistency, account isolation."""
from __future__ import annotations

import json
import threading

import boto3
import pytest

from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Job
from chalicelib.platform.sealing import MASK
from chalicelib.platform.wiring import job_service
from tests.keyfactory import b64_key, pem_key

JOB = {
    "description": "Sample Job",
    "repository": {"url": "https://github.com/org/repo.git", "defaultPlaybook": "site.yml", "branch": "main"},
    "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local", "datacenter": "VA1"}}],
    "properties": {"greeting": "hello", "count": 3},
    "callbacks": [{"url": "https://hooks.example.com/runner", "level": "RESULT"}],
    "playbookTags": ["deploy"],
    "executionTtl": 30,
}


def create(client, body=None, account="DEMO"):
    answer = client.post(f"/jobs/{account}", body or JOB)
    assert answer.status == 201, answer.body
    return answer.body[0]


def test_create_answers_an_array_holding_the_whole_job(client):
    answer = client.post("/jobs/DEMO", JOB)
    assert answer.status == 201 and isinstance(answer.body, list) and len(answer.body) == 1
    job = answer.body[0]
    assert job["accountAlias"] == "DEMO" and job["status"] == "ACTIVE"
    assert job["repository"] == {"url": JOB["repository"]["url"], "branch": "main", "defaultPlaybook": "site.yml"}
    for key in ("description", "hosts", "properties", "callbacks", "playbookTags", "executionTtl"):
        assert job[key] == JOB[key], key
    assert job["useDynamicInventory"] is False
    assert isinstance(job["createdTime"], int) and job["createdTime"] == job["lastUpdatedTime"]
    assert job["links"][0] == {"ref": "self", "id": job["id"], "href": f"/jobs/DEMO/{job['id']}",
                               "verbs": ["GET", "PUT", "DELETE"]}


def test_get_answers_the_job_object(client):
    job = create(client)
    answer = client.get(f"/jobs/DEMO/{job['id']}")
    assert answer.status == 200 and answer.body == job


def test_get_of_a_missing_job_is_404(client):
    answer = client.get("/jobs/DEMO/8e0f8d8e-0000-0000-0000-000000000000")
    assert answer.status == 404 and answer.body["code"] == "NotFound"


def test_update_replaces_the_definition_and_keeps_created_time(client):
    job = create(client)
    changed = dict(JOB, description="changed", hosts=[{"id": "web1"}, {"id": "web2"}])
    answer = client.put(f"/jobs/DEMO/{job['id']}", changed)
    assert answer.status == 200 and isinstance(answer.body, list)
    updated = answer.body[0]
    assert updated["description"] == "changed" and [h["id"] for h in updated["hosts"]] == ["web1", "web2"]
    assert updated["createdTime"] == job["createdTime"] and updated["lastUpdatedTime"] >= job["lastUpdatedTime"]
    assert client.get(f"/jobs/DEMO/{job['id']}").body == updated


def test_update_of_a_missing_job_is_404(client):
    answer = client.put("/jobs/DEMO/8e0f8d8e-0000-0000-0000-000000000000", JOB)
    assert answer.status == 404


def test_delete_answers_204_then_the_job_is_gone(client):
    job = create(client)
    answer = client.delete(f"/jobs/DEMO/{job['id']}")
    assert answer.status == 204 and not answer.raw
    assert client.get(f"/jobs/DEMO/{job['id']}").status == 404
    assert client.delete(f"/jobs/DEMO/{job['id']}").status == 404


def test_list_is_newest_first_with_exact_total_and_pages(client):
    ids = [create(client, dict(JOB, description=f"job {n}"))["id"] for n in range(5)]
    first = client.get("/jobs/DEMO?page=0&size=2").body
    second = client.get("/jobs/DEMO?page=1&size=2").body
    last = client.get("/jobs/DEMO?page=2&size=2").body
    beyond = client.get("/jobs/DEMO?page=3&size=2").body
    assert first["totalSize"] == 5 and (first["page"], first["size"]) == (0, 2)
    newest_first = [job["id"] for job in first["results"] + second["results"] + last["results"]]
    assert newest_first == list(reversed(ids))
    assert last["size"] == 1 and beyond == {"totalSize": 5, "page": 3, "size": 0, "results": []}
    assert client.get("/jobs/DEMO").body["size"] == 5


def test_job_count_moves_with_create_and_delete_only(client):
    jobs = [create(client) for _ in range(3)]
    client.delete(f"/jobs/DEMO/{jobs[0]['id']}")
    client.delete(f"/jobs/DEMO/{jobs[0]['id']}")  # a second delete of the same job counts nothing
    client.put(f"/jobs/DEMO/{jobs[1]['id']}", JOB)
    assert client.get("/jobs/DEMO").body["totalSize"] == 2


@pytest.mark.parametrize("query, field", [("page=-1", "page"), ("size=0", "size"), ("size=101", "size"),
                                          ("page=abc", "page")])
def test_bad_paging_is_400_naming_the_parameter(client, query, field):
    answer = client.get(f"/jobs/DEMO?{query}")
    assert answer.status == 400 and answer.body["field"] == field and answer.body["code"] == "InvalidRequest"


@pytest.mark.parametrize("raw, field", [(b"{broken", "body"), (b"[1, 2]", "body"), (b'"text"', "body"), (b"", "body")])
def test_malformed_bodies_are_400(client, raw, field):
    answer = client.post("/jobs/DEMO", raw=raw)
    assert answer.status == 400 and answer.body["field"] == field


def test_deeply_nested_bodies_are_400_not_500_and_never_stored(client):
    # Found by hand while adding tests/functional/test_fuzz.py (schemathesis nests nothing that
    # deep): a body nested past the JSON decoder's recursion limit was a 500 on every route with
    # a body; a job nested a little less was stored, and from then on reading it and listing the
    # account's jobs were 500s.
    too_deep = b"[" * 5000 + b"]" * 5000
    for path in ("/jobs/DEMO", "/authentication/login"):
        answer = client.post(path, raw=too_deep)
        assert (answer.status, answer.body["field"]) == (400, "body"), (path, answer.body)
    nested = {}
    for _ in range(930):
        nested = {"a": nested}
    answer = client.post("/jobs/DEMO", dict(JOB, hosts=[{"id": "localhost", "hostVars": {"deep": nested}}]))
    assert (answer.status, answer.body["field"]) == (400, "body")
    assert client.get("/jobs/DEMO").body["totalSize"] == 0
    create(client, dict(JOB, hosts=[{"id": "localhost", "hostVars": {"vars": {"nested": {"as": ["usual"]}}}}]))
    assert client.get("/jobs/DEMO").status == 200


def test_bad_field_is_400_and_writes_nothing(client):
    answer = client.post("/jobs/DEMO", dict(JOB, executionTtl=-1))
    assert answer.status == 400 and answer.body == {
        "code": "InvalidRequest", "field": "executionTtl", "message": "must be a positive integer number of minutes"}
    assert client.get("/jobs/DEMO").body["totalSize"] == 0


UNSAFE_FIELDS = [
    # (what the body changes, the field the 400 names): callbacks to no public address, or
    # another port; git addresses, refs and tags that a command line would read as options.
    ({"callbacks": [{"url": "http://10.0.0.1/x", "level": "DEBUG"}]}, "callbacks[0].url"),
    ({"callbacks": ["https://hooks.example.com/ok", "http://192.168.1.1/x"]}, "callbacks[1].url"),
    ({"callbacks": ["https://100.64.0.1/x"]}, "callbacks[0].url"),
    ({"callbacks": ["https://[fd00::1]/x"]}, "callbacks[0].url"),
    ({"callbacks": ["https://[::ffff:10.0.0.1]/x"]}, "callbacks[0].url"),
    ({"callbacks": ["https://[2002:0a00:0001::]/x"]}, "callbacks[0].url"),
    ({"callbacks": ["https://169.254.169.254/latest/meta-data/"]}, "callbacks[0].url"),
    ({"callbacks": ["https://93.184.216.34:8443/x"]}, "callbacks[0].url"),
    ({"callbacks": ["http://127.0.0.1:8000/jobs/DEMO"]}, "callbacks[0].url"),  # local mode's own API
    ({"repository": {"url": "-oProxyCommand=x@github.com:org/repo.git", "defaultPlaybook": "site.yml"}},
     "repository.url"),
    ({"repository": {"url": "ssh://-oProxyCommand=x/repo", "defaultPlaybook": "site.yml"}}, "repository.url"),
    ({"repository": {"url": "ext::sh", "defaultPlaybook": "site.yml"}}, "repository.url"),
    ({"repository": {"url": "https://github.com/org/repo.git", "branch": "--upload-pack=x",
                     "defaultPlaybook": "site.yml"}}, "repository.branch"),
    ({"playbookTags": ["deploy", "--list-hosts"]}, "playbookTags[1]"),
]


def test_unsafe_targets_and_option_like_values_are_400_naming_the_field(client):
    job = create(client)
    for change, field in UNSAFE_FIELDS:
        answer = client.post("/jobs/DEMO", {**JOB, **change})
        assert (answer.status, answer.body["field"], answer.body["code"]) == (400, field, "InvalidRequest"), change
        answer = client.put(f"/jobs/DEMO/{job['id']}", {**JOB, **change})
        assert (answer.status, answer.body["field"]) == (400, field), change
    assert client.get("/jobs/DEMO").body["totalSize"] == 1
    assert client.get(f"/jobs/DEMO/{job['id']}").body == job
    # local mode takes callbacks to loopback, on any port but its own
    callbacks = [{"url": "http://127.0.0.1:9/x", "level": "DEBUG"}, {"url": "http://localhost:31337/y", "level": "ERROR"}]
    assert create(client, {**JOB, "callbacks": callbacks})["callbacks"] == callbacks


def test_immediate_with_a_bad_value_is_400_and_writes_nothing(client):
    answer = client.post("/jobs/DEMO?immediate=maybe", JOB)
    assert answer.status == 400 and answer.body["field"] == "immediate"
    assert client.get("/jobs/DEMO").body["totalSize"] == 0


# --- secrets -----------------------------------------------------------------------------------

def secret_job():
    return dict(JOB, sshPrivateKey=b64_key("rsa"),
                repository=dict(JOB["repository"], credentials={"username": "git-user", "password": "canary-Pa55word-81"}),
                hosts=[{"id": "web", "sshPrivateKey": b64_key("ed25519")}, {"id": "db"}])


def raw_items(table_logical_id: str) -> str:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    return json.dumps(dynamodb.scan(TableName=get_settings().table(table_logical_id))["Items"])


def canaries() -> list[str]:
    """Every form a leaked secret could take."""
    values = ["canary-Pa55word-81", b64_key("rsa"), b64_key("ed25519")]
    for kind in ("rsa", "ed25519"):
        values += [line for line in pem_key(kind).decode().splitlines() if "-----" not in line and len(line) > 20]
    return values


def test_secrets_are_masked_in_every_answer(client):
    created = client.post("/jobs/DEMO", secret_job())
    job = created.body[0]
    assert job["repository"]["credentials"] == {"username": "git-user", "password": MASK}
    assert job["sshPrivateKey"] == MASK
    assert job["hosts"][0]["sshPrivateKey"] == MASK and "sshPrivateKey" not in job["hosts"][1]
    answers = [created, client.get(f"/jobs/DEMO/{job['id']}"), client.get("/jobs/DEMO"),
               client.put(f"/jobs/DEMO/{job['id']}", secret_job())]
    for answer in answers:
        for canary in canaries():
            assert canary not in answer.raw.decode(), canary


def test_stored_item_holds_no_clear_secret(client):
    create(client, secret_job())
    stored = raw_items("JobsTable")
    assert "sealed" in stored
    for canary in canaries():
        assert canary not in stored, canary


def test_secrets_open_again_for_the_worker(client):
    job = create(client, secret_job())
    opened = job_service().open_secrets("DEMO", job["id"])
    assert opened["repository.credentials.password"] == "canary-Pa55word-81"
    assert opened["hosts[web].sshPrivateKey"] == pem_key("ed25519").decode()
    assert opened["sshPrivateKey"] == pem_key("rsa").decode()


def test_putting_the_mask_back_keeps_the_stored_secret(client):
    job = create(client, secret_job())
    answer = client.put(f"/jobs/DEMO/{job['id']}", dict(job, description="same secrets"))
    assert answer.status == 200, answer.body
    assert job_service().open_secrets("DEMO", job["id"])["repository.credentials.password"] == "canary-Pa55word-81"


def test_update_without_a_secret_drops_it(client):
    job = create(client, secret_job())
    client.put(f"/jobs/DEMO/{job['id']}", JOB)
    assert job_service().open_secrets("DEMO", job["id"]) == {}
    assert "sshPrivateKey" not in client.get(f"/jobs/DEMO/{job['id']}").body


def test_mask_with_nothing_stored_is_400(client):
    body = dict(JOB, sshPrivateKey=MASK)
    answer = client.post("/jobs/DEMO", body)
    assert answer.status == 400 and answer.body["field"] == "sshPrivateKey"


def test_a_secret_moved_to_another_job_does_not_open(client):
    first, second = create(client, secret_job()), create(client)
    item = Job.get("DEMO", first["id"])
    stolen = Job.get("DEMO", second["id"])
    stolen.sealed = item.sealed
    stolen.save()
    with pytest.raises(Exception):
        job_service().open_secrets("DEMO", second["id"])


# --- consistency -------------------------------------------------------------------------------

def test_a_stale_write_loses_with_409_instead_of_overwriting(client):
    job = create(client)
    stale = Job.get("DEMO", job["id"])
    assert client.put(f"/jobs/DEMO/{job['id']}", dict(JOB, description="first")).status == 200
    stale.spec = "{}"
    from pynamodb.exceptions import PutError
    with pytest.raises(PutError):
        stale.save()
    assert client.get(f"/jobs/DEMO/{job['id']}").body["description"] == "first"


def test_keeping_a_secret_while_another_writer_changes_the_job_is_a_409(client, monkeypatch):
    job = create(client, secret_job())
    service = job_service()
    original_seal = service._seal

    def seal_then_race(*args, **kwargs):
        sealed = original_seal(*args, **kwargs)
        # another writer replaces the job between our read and our write
        monkeypatch.setattr(service, "_seal", original_seal)
        assert client.put(f"/jobs/DEMO/{job['id']}", dict(JOB, description="the other writer")).status == 200
        return sealed

    monkeypatch.setattr(service, "_seal", seal_then_race)
    answer = client.put(f"/jobs/DEMO/{job['id']}", dict(job, description="kept secrets"))
    assert answer.status == 409 and answer.body["code"] == "Conflict"
    assert client.get(f"/jobs/DEMO/{job['id']}").body["description"] == "the other writer"


def test_concurrent_updates_never_lose_a_write(client):
    job = create(client)
    outcomes: list[int] = []

    def update(n: int) -> None:
        outcomes.append(client.put(f"/jobs/DEMO/{job['id']}", dict(JOB, description=f"writer {n}")).status)

    threads = [threading.Thread(target=update, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(outcomes) <= {200, 409}
    # every accepted write moved the version by one: none was silently overwritten
    assert Job.get("DEMO", job["id"]).version == 1 + outcomes.count(200)


def test_create_in_an_account_that_does_not_exist_writes_nothing(client, aws_stack):
    from chalicelib.auth import users
    from chalicelib.platform.models import User
    from tests.functional.conftest import token_for
    # a user whose account is gone (written directly: the service makes users of existing accounts only)
    User("ghost", password_hash=users.hash_password("ghost-password-1"), account_alias="GHOST", roles=["OPERATOR"],
         created_time=1, token_version="v1").save()
    ghost = token_for(aws_stack.signing_key, "ghost", 60)
    answer = client.post("/jobs/GHOST", JOB, token=ghost)
    assert answer.status == 404
    assert "GHOST" not in raw_items("JobsTable")


# --- account isolation -------------------------------------------------------------------------

ROUTES = [("POST", "/jobs/{a}"), ("GET", "/jobs/{a}"), ("GET", "/jobs/{a}/{j}"),
          ("PUT", "/jobs/{a}/{j}"), ("DELETE", "/jobs/{a}/{j}")]


@pytest.mark.parametrize("method, template", ROUTES)
def test_every_route_answers_403_for_another_accounts_path(client, method, template):
    theirs = create(client.other, account="OTHER")
    answer = client.request(method, template.format(a="OTHER", j=theirs["id"]), JOB)
    assert answer.status == 403 and answer.body["code"] == "Forbidden"
    assert client.other.get(f"/jobs/OTHER/{theirs['id']}").body == theirs


@pytest.mark.parametrize("method, template", ROUTES)
def test_every_route_answers_401_without_a_token(client, method, template):
    answer = client.anonymous.request(method, template.format(a="DEMO", j="x"), JOB)
    assert answer.status == 401 and answer.body["code"] == "Unauthenticated"


def test_another_accounts_job_id_is_not_found_under_my_account(client):
    theirs = create(client.other, account="OTHER")
    assert client.get(f"/jobs/DEMO/{theirs['id']}").status == 404
    assert client.delete(f"/jobs/DEMO/{theirs['id']}").status == 404
    assert client.other.get(f"/jobs/OTHER/{theirs['id']}").status == 200


# --- cost of each route ------------------------------------------------------------------------

# The authorizer reads the token's user (revocation is checked on every request).
AUTHORIZER = ["dynamodb.GetItem"]


def calls_of(request):
    with aws.counting_calls() as calls:
        answer = request()
    assert answer.status < 300, answer.body
    return calls


def test_each_route_makes_the_fewest_aws_calls(client):
    job = create(client)
    assert calls_of(lambda: client.get(f"/jobs/DEMO/{job['id']}")) == AUTHORIZER + ["dynamodb.GetItem"]
    assert calls_of(lambda: client.get("/jobs/DEMO?size=10")) == AUTHORIZER + ["dynamodb.GetItem", "dynamodb.Query"]
    assert calls_of(lambda: client.post("/jobs/DEMO", JOB)) == AUTHORIZER + ["dynamodb.TransactWriteItems"]
    assert calls_of(lambda: client.post("/jobs/DEMO", secret_job())) == AUTHORIZER + ["kms.GenerateDataKey", "dynamodb.TransactWriteItems"]
    assert calls_of(lambda: client.put(f"/jobs/DEMO/{job['id']}", JOB)) == AUTHORIZER + ["dynamodb.UpdateItem"]
    assert calls_of(lambda: client.put(f"/jobs/DEMO/{job['id']}", secret_job())) == AUTHORIZER + ["kms.GenerateDataKey", "dynamodb.UpdateItem"]
    # Its schedules are read to go in the same transaction, and again for one made meanwhile.
    assert calls_of(lambda: client.delete(f"/jobs/DEMO/{job['id']}")) == AUTHORIZER + [
        "dynamodb.Query", "dynamodb.TransactWriteItems", "dynamodb.Query"]


def test_an_id_longer_than_a_dynamodb_key_is_404_naming_it(client):
    # DynamoDB would refuse the read itself (ValidationException); no such job can exist.
    answer = client.get(f"/jobs/DEMO/{'j' * 1025}")
    assert answer.status == 404 and answer.body["field"] == "jobId"
    answer = client.get(f"/jobs/DEMO/{'j' * 1025}/executions/{'e' * 10}")
    assert answer.status == 404
