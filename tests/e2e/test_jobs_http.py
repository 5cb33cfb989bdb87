"""The Jobs resource over real HTTP against local mode (the original Job Service API; docs/openapi.yaml)."""
from __future__ import annotations

import base64
import copy
import json
import re
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.e2e.conftest import Client, assert_error

MASK = "********"
HOOK = "http://127.0.0.1:9/hook"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Every job field docs/openapi.yaml names.
JOB_FIELDS = {"id", "accountAlias", "description", "executionTtl", "repository", "hosts", "properties",
              "playbookTags", "callbacks", "useDynamicInventory", "status", "createdTime",
              "lastUpdatedTime", "links"}

# The reference's "CREATE JOB" request example, verbatim (the original API's "Sample Job").
REFERENCE_SAMPLE_JOB = json.loads("""
{
  "description": "Sample Job",
  "repository": {
    "credentials": {
      "username": "GitHub username",
      "password": "GitHub password"
    },
    "defaultPlaybook": "example.yml",
    "branch": "feature",
    "url": "https://GitHub.com/yourrepository.GitHub"
  },
  "callbacks": [
    {
      "url": "your callback webhook",
      "level": "DEBUG"
    }
  ],
  "hosts": [
    {
      "hostVars": {
        "ansible_connection": "ssh",
        "datacenter": "VA1"
      },
      "sshPrivateKey" : "TUlJRW93SUJBQUtDQVF........WE81ZnQ1dg==",
      "id": "localhost"
    }
  ]
}
""")


def pem_key(kind: str = "ed25519") -> bytes:
    """A fresh unencrypted private key as PEM bytes (Ed25519/OpenSSH or RSA/PKCS8)."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secret_fragments(pem: bytes) -> list[str]:
    """Pieces of a key that must never show in an answer: its base64 and its PEM body lines."""
    lines = [line for line in pem.decode("ascii").splitlines() if line and not line.startswith("-----")]
    return [b64(pem)] + lines


def assert_no_secrets(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:12]}...) appears in a response body"


def a_job(**overrides) -> dict:
    job = {
        "description": "nightly patching",
        "repository": {"url": "https://git.example.com/ops/playbooks.git", "defaultPlaybook": "site.yml"},
        "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}],
    }
    job.update(overrides)
    return job


def create(client: Client, alias: str = "DEMO", body: dict | None = None) -> dict:
    answer = client.post(f"/jobs/{alias}", json=body if body is not None else a_job())
    assert answer.status_code == 201, answer.text
    return answer.json()[0]


def delete_all_jobs(client: Client, alias: str) -> None:
    while True:
        listed = client.get(f"/jobs/{alias}", params={"size": 100})
        assert listed.status_code == 200, listed.text
        results = listed.json()["results"]
        if not results:
            return
        for job in results:
            assert client.delete(f"/jobs/{alias}/{job['id']}").status_code == 204


@pytest.fixture(scope="module")
def demo(service) -> Client:
    return service.client("DEMO")


@pytest.fixture(scope="module")
def other(service) -> Client:
    return service.client("OTHER")


@pytest.fixture(scope="module")
def anonymous(service) -> Client:
    return service.client()


@pytest.fixture(scope="module")
def other_job(other) -> dict:
    """A job of account OTHER."""
    return create(other, "OTHER", a_job(description="belongs to OTHER"))


# -- create ---------------------------------------------------------------------------------------

def test_create_answers_201_with_an_array_holding_the_whole_job(demo):
    key = pem_key("ed25519")
    password = f"repo-pw-{uuid.uuid4().hex}"
    body = {
        "description": "deploy the web tier",
        "executionTtl": 30,
        "repository": {"url": "https://git.example.com/ops/web.git", "defaultPlaybook": "deploy/web.yml",
                       "credentials": {"username": "deployer", "password": password}},
        "hosts": [{"id": "web1.example.com", "hostVars": {"ansible_port": 2222, "role": "web"},
                   "sshPrivateKey": b64(key)}],
        "properties": {"release": "1.2.3", "replicas": 3},
        "callbacks": [{"url": HOOK, "level": "ERROR"}, {"url": "https://hooks.example.com/runner"}],
    }
    before = int(time.time() * 1000)
    answer = demo.post("/jobs/DEMO", json=body)
    after = int(time.time() * 1000)

    assert answer.status_code == 201, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    document = answer.json()
    assert isinstance(document, list) and len(document) == 1
    job = document[0]
    assert JOB_FIELDS <= set(job), JOB_FIELDS - set(job)
    assert UUID.match(job["id"]), job["id"]
    assert job["accountAlias"] == "DEMO"
    assert job["description"] == "deploy the web tier"
    assert job["executionTtl"] == 30
    assert job["repository"] == {"url": "https://git.example.com/ops/web.git", "branch": "master",
                                 "defaultPlaybook": "deploy/web.yml",
                                 "credentials": {"username": "deployer", "password": MASK}}
    assert job["hosts"] == [{"id": "web1.example.com", "hostVars": {"ansible_port": 2222, "role": "web"},
                             "sshPrivateKey": MASK}]
    assert job["properties"] == {"release": "1.2.3", "replicas": 3}
    assert job["callbacks"] == [{"url": HOOK, "level": "ERROR"},
                                {"url": "https://hooks.example.com/runner", "level": "DEBUG"}]
    assert job["playbookTags"] == []
    assert job["useDynamicInventory"] is False
    assert job["status"] == "ACTIVE"
    for name in ("createdTime", "lastUpdatedTime"):
        assert type(job[name]) is int, (name, job[name])
    assert before - 5_000 <= job["createdTime"] <= after + 5_000  # epoch milliseconds, not seconds
    assert job["lastUpdatedTime"] == job["createdTime"]
    assert isinstance(job["links"], list) and job["links"]
    self_link = next(link for link in job["links"] if link.get("ref") == "self")
    assert self_link["id"] == job["id"]
    assert self_link["href"].endswith(f"/DEMO/jobs/{job['id']}") or self_link["href"].endswith(
        f"/jobs/DEMO/{job['id']}")
    assert "GET" in self_link["verbs"] and "DELETE" in self_link["verbs"]
    assert_no_secrets(answer.text, [password, *secret_fragments(key)])


def test_create_accepts_the_reference_sample_job_with_real_callback_and_key(demo):
    key = pem_key("rsa")
    body = copy.deepcopy(REFERENCE_SAMPLE_JOB)
    body["callbacks"][0]["url"] = HOOK
    body["hosts"][0]["sshPrivateKey"] = b64(key)
    answer = demo.post("/jobs/DEMO", json=body)
    assert answer.status_code == 201, answer.text
    job = answer.json()[0]
    assert job["description"] == "Sample Job"
    assert job["repository"] == {"url": "https://GitHub.com/yourrepository.GitHub", "branch": "feature",
                                 "defaultPlaybook": "example.yml",
                                 "credentials": {"username": "GitHub username", "password": MASK}}
    assert job["callbacks"] == [{"url": HOOK, "level": "DEBUG"}]
    assert job["hosts"] == [{"id": "localhost", "hostVars": {"ansible_connection": "ssh", "datacenter": "VA1"},
                             "sshPrivateKey": MASK}]
    assert job["status"] == "ACTIVE"
    assert_no_secrets(answer.text, ["GitHub password", *secret_fragments(key)])
    fetched = demo.get(f"/jobs/DEMO/{job['id']}")
    assert fetched.status_code == 200 and fetched.json() == job
    assert_no_secrets(fetched.text, ["GitHub password", *secret_fragments(key)])


def test_create_rejects_the_reference_sample_job_placeholder_callback_url(demo):
    body = copy.deepcopy(REFERENCE_SAMPLE_JOB)
    body["hosts"][0]["sshPrivateKey"] = b64(pem_key())
    assert_error(demo.post("/jobs/DEMO", json=body), 400, "callbacks[0].url")


def test_create_rejects_the_reference_sample_job_elided_ssh_key(demo):
    body = copy.deepcopy(REFERENCE_SAMPLE_JOB)
    body["callbacks"][0]["url"] = HOOK
    assert_error(demo.post("/jobs/DEMO", json=body), 400, "hosts[0].sshPrivateKey")


def test_create_rejects_the_reference_sample_job_as_published(demo):
    body = assert_error(demo.post("/jobs/DEMO", json=REFERENCE_SAMPLE_JOB), 400)
    assert body.get("field") in {"callbacks[0].url", "hosts[0].sshPrivateKey"}, body


def test_create_accepts_ref_as_a_synonym_of_branch_and_top_level_secrets_are_masked(demo):
    key = pem_key()
    body = a_job(repository={"url": "https://git.example.com/ops/playbooks.git", "ref": "v1.2",
                             "defaultPlaybook": "site.yml"},
                 sshPrivateKey=b64(key), playbookTags=["web", "db"])
    answer = demo.post("/jobs/DEMO", json=body)
    assert answer.status_code == 201, answer.text
    job = answer.json()[0]
    assert job["repository"]["branch"] == "v1.2"
    assert job["playbookTags"] == ["web", "db"]
    assert job["sshPrivateKey"] == MASK
    assert_no_secrets(answer.text, secret_fragments(key))


# -- get, update, delete --------------------------------------------------------------------------

def test_get_answers_200_with_the_job_object(demo):
    job = create(demo)
    answer = demo.get(f"/jobs/DEMO/{job['id']}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == job


def test_get_of_an_unknown_job_is_404(demo):
    assert_error(demo.get(f"/jobs/DEMO/{uuid.uuid4()}"), 404)


def test_update_answers_200_with_an_array_and_moves_only_last_updated_time(demo):
    password = f"pw-{uuid.uuid4().hex}"
    job = create(demo, body=a_job(repository={"url": "https://git.example.com/ops/playbooks.git",
                                              "defaultPlaybook": "site.yml",
                                              "credentials": {"username": "u", "password": password}}))
    time.sleep(0.05)  # not a wait: the update's lastUpdatedTime (in ms) must differ from the creation's
    new_password = f"pw-{uuid.uuid4().hex}"
    changed = a_job(description="changed", executionTtl=60,
                    repository={"url": "https://git.example.com/ops/other.git", "branch": "release",
                                "defaultPlaybook": "other.yml",
                                "credentials": {"username": "u2", "password": new_password}},
                    hosts=[{"id": "db1"}, {"id": "db2", "hostVars": {"x": 1}}],
                    properties={"k": "v"}, callbacks=[{"url": HOOK, "level": "RESULT"}])
    answer = demo.put(f"/jobs/DEMO/{job['id']}", json=changed)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert isinstance(document, list) and len(document) == 1
    updated = document[0]
    assert updated["id"] == job["id"]
    assert updated["accountAlias"] == "DEMO"
    assert updated["createdTime"] == job["createdTime"]
    assert type(updated["lastUpdatedTime"]) is int
    assert updated["lastUpdatedTime"] > job["lastUpdatedTime"]
    assert updated["description"] == "changed"
    assert updated["executionTtl"] == 60
    assert updated["repository"] == {"url": "https://git.example.com/ops/other.git", "branch": "release",
                                     "defaultPlaybook": "other.yml",
                                     "credentials": {"username": "u2", "password": MASK}}
    assert updated["hosts"] == [{"id": "db1", "hostVars": {}}, {"id": "db2", "hostVars": {"x": 1}}]
    assert updated["properties"] == {"k": "v"}
    assert updated["callbacks"] == [{"url": HOOK, "level": "RESULT"}]
    assert updated["status"] == "ACTIVE"
    assert_no_secrets(answer.text, [password, new_password])
    fetched = demo.get(f"/jobs/DEMO/{job['id']}")
    assert fetched.status_code == 200 and fetched.json() == updated


def test_update_keeps_a_secret_sent_back_masked(demo):
    password = f"pw-{uuid.uuid4().hex}"
    repository = {"url": "https://git.example.com/ops/playbooks.git", "defaultPlaybook": "site.yml",
                  "credentials": {"username": "u", "password": password}}
    job = create(demo, body=a_job(repository=repository))
    answer = demo.put(f"/jobs/DEMO/{job['id']}",
                      json=a_job(description="again", repository=job["repository"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["repository"]["credentials"] == {"username": "u", "password": MASK}
    assert_no_secrets(answer.text, [password])


def test_update_of_an_unknown_job_is_404(demo):
    assert_error(demo.put(f"/jobs/DEMO/{uuid.uuid4()}", json=a_job()), 404)


def test_update_with_an_invalid_body_is_400_and_changes_nothing(demo):
    job = create(demo)
    assert_error(demo.put(f"/jobs/DEMO/{job['id']}", json=a_job(hosts=None)), 400, "hosts")
    assert_error(demo.put(f"/jobs/DEMO/{job['id']}", data=b"{not json",
                          headers={"Content-Type": "application/json"}), 400, "body")
    assert demo.get(f"/jobs/DEMO/{job['id']}").json() == job


def test_delete_answers_204_then_the_job_is_404(demo):
    job = create(demo)
    answer = demo.delete(f"/jobs/DEMO/{job['id']}")
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    assert_error(demo.get(f"/jobs/DEMO/{job['id']}"), 404)
    assert_error(demo.delete(f"/jobs/DEMO/{job['id']}"), 404)
    assert_error(demo.put(f"/jobs/DEMO/{job['id']}", json=a_job()), 404)


# -- list -------------------------------------------------------------------------------------------

def test_list_is_newest_first_with_exact_total_and_pages(demo):
    delete_all_jobs(demo, "DEMO")
    empty = demo.get("/jobs/DEMO")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"totalSize": 0, "page": 0, "size": 0, "results": []}

    created = []
    for index in range(5):
        created.append(create(demo, body=a_job(description=f"job {index}")))
        time.sleep(0.01)  # not a wait: distinct createdTime (in ms), so that newest-first is one order
    newest_first = [job["id"] for job in reversed(created)]
    by_id = {job["id"]: job for job in created}

    everything = demo.get("/jobs/DEMO")
    assert everything.status_code == 200, everything.text
    body = everything.json()
    assert set(body) == {"totalSize", "page", "size", "results"}
    assert (body["totalSize"], body["page"], body["size"]) == (5, 0, 5)
    assert [job["id"] for job in body["results"]] == newest_first
    assert all(job == by_id[job["id"]] for job in body["results"])

    expected_pages = {0: newest_first[0:2], 1: newest_first[2:4], 2: newest_first[4:5], 3: []}
    for page, ids in expected_pages.items():
        answer = demo.get("/jobs/DEMO", params={"page": page, "size": 2})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["totalSize"] == 5, (page, body)
        assert body["page"] == page, (page, body)
        assert body["size"] == len(ids), (page, body)
        assert [job["id"] for job in body["results"]] == ids, page

    big_page = demo.get("/jobs/DEMO", params={"page": 0, "size": 100}).json()
    assert (big_page["totalSize"], big_page["size"]) == (5, 5)
    one = demo.get("/jobs/DEMO", params={"page": 4, "size": 1}).json()
    assert [job["id"] for job in one["results"]] == [created[0]["id"]]

    demo.delete(f"/jobs/DEMO/{created[2]['id']}")
    after_delete = demo.get("/jobs/DEMO").json()
    assert after_delete["totalSize"] == 4
    assert [job["id"] for job in after_delete["results"]] == [i for i in newest_first if i != created[2]["id"]]


def test_list_never_shows_secrets(demo):
    key = pem_key()
    password = f"pw-{uuid.uuid4().hex}"
    create(demo, body=a_job(repository={"url": "https://git.example.com/ops/p.git", "defaultPlaybook": "a.yml",
                                        "credentials": {"username": "u", "password": password}},
                            hosts=[{"id": "h1", "sshPrivateKey": b64(key)}]))
    answer = demo.get("/jobs/DEMO")
    assert answer.status_code == 200
    assert_no_secrets(answer.text, [password, *secret_fragments(key)])


@pytest.mark.parametrize("params, field", [
    ({"page": "-1"}, "page"),
    ({"page": "abc"}, "page"),
    ({"size": "0"}, "size"),
    ({"size": "101"}, "size"),
    ({"size": "ten"}, "size"),
], ids=["page_negative", "page_not_a_number", "size_zero", "size_above_100", "size_not_a_number"])
def test_list_rejects_out_of_range_paging_with_400_naming_the_field(demo, params, field):
    assert_error(demo.get("/jobs/DEMO", params=params), 400, field)


# -- accounts and tokens ---------------------------------------------------------------------------

def cross_account_requests(job_id: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/jobs/OTHER", a_job()),
        ("GET", "/jobs/OTHER", None),
        ("GET", f"/jobs/OTHER/{job_id}", None),
        ("PUT", f"/jobs/OTHER/{job_id}", a_job(description="hijacked")),
        ("DELETE", f"/jobs/OTHER/{job_id}", None),
        ("GET", f"/jobs/OTHER/{uuid.uuid4()}", None),
    ]


def test_returns_403_for_another_accounts_jobs_on_every_route(demo, other, other_job):
    total_before = other.get("/jobs/OTHER").json()["totalSize"]
    for method, path, body in cross_account_requests(other_job["id"]):
        answer = demo.request(method, path, json=body)
        assert_error(answer, 403)
        assert "belongs to OTHER" not in answer.text, (method, path, answer.text)  # nothing of the job leaks
    after = other.get(f"/jobs/OTHER/{other_job['id']}")
    assert after.status_code == 200 and after.json() == other_job
    assert other.get("/jobs/OTHER").json()["totalSize"] == total_before


def test_returns_403_for_another_accounts_job_even_with_an_invalid_body(demo, other_job):
    assert_error(demo.put(f"/jobs/OTHER/{other_job['id']}", json={}), 403)
    assert_error(demo.post("/jobs/OTHER", data=b"{not json", headers={"Content-Type": "application/json"}), 403)


def test_returns_401_without_a_token_on_every_route(anonymous, other_job):
    for method, path, body in cross_account_requests(other_job["id"]) + [("GET", "/jobs/DEMO", None)]:
        assert_error(anonymous.request(method, path, json=body), 401)


def forged_token(token: str, account: str) -> str:
    """`token` with its payload's account changed and the old signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for name in ("acc", "accountAlias", "account"):
        if name in claims:
            claims[name] = account
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def tampered_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


@pytest.mark.parametrize("authorization", [
    "Bearer garbage",
    "Bearer ",
    "Bearer a.b.c",
    "Basic ZGVtbzpkZW1v",
    "TOKEN",
], ids=["garbage", "empty", "three_garbage_parts", "basic_scheme", "no_scheme"])
def test_returns_401_for_a_bad_token(service, authorization):
    anonymous = service.client()
    answer = anonymous.get("/jobs/DEMO", headers={"Authorization": authorization})
    assert_error(answer, 401)


def test_returns_401_for_a_token_with_a_tampered_signature_or_forged_account(service, demo):
    anonymous = service.client()
    for token in (tampered_signature(demo.token), forged_token(demo.token, "OTHER")):
        assert_error(anonymous.get("/jobs/DEMO", headers={"Authorization": f"Bearer {token}"}), 401)
        assert_error(anonymous.get("/jobs/OTHER", headers={"Authorization": f"Bearer {token}"}), 401)


# -- validation ------------------------------------------------------------------------------------

def without(path: str) -> dict:
    body = a_job(callbacks=[{"url": HOOK}])
    parent, _, name = path.rpartition(".")
    target = body[parent] if parent else body
    del target[name]
    return body


@pytest.mark.parametrize("body, field", [
    (without("repository"), "repository"),
    (without("hosts"), "hosts"),
    (without("repository.url"), "repository.url"),
    (without("repository.defaultPlaybook"), "repository.defaultPlaybook"),
    (a_job(repository={"url": "ftp://git.example.com/ops/playbooks.git", "defaultPlaybook": "site.yml"}),
     "repository.url"),
    (a_job(hosts=[{"hostVars": {}}]), "hosts[0].id"),
    (a_job(hosts="localhost"), "hosts"),
    (a_job(callbacks=[{"url": HOOK, "level": "LOUD"}]), "callbacks[0].level"),
    (a_job(executionTtl=-5), "executionTtl"),
    (a_job(executionTtl="ten"), "executionTtl"),
    (a_job(sshPrivateKey="bm90IGEga2V5"), "sshPrivateKey"),
], ids=["no_repository", "no_hosts", "no_repository_url", "no_default_playbook", "ftp_url",
        "host_without_id", "hosts_not_an_array", "bad_callback_level", "negative_ttl", "ttl_not_a_number",
        "not_a_private_key"])
def test_create_rejects_an_invalid_job_with_400_naming_the_field(demo, body, field):
    assert_error(demo.post("/jobs/DEMO", json=body), 400, field)


@pytest.mark.parametrize("raw", [b"{not json", b'{"repository": ', b""], ids=["garbled", "truncated", "empty"])
def test_create_rejects_a_malformed_body_with_400_field_body(demo, raw):
    answer = demo.post("/jobs/DEMO", data=raw, headers={"Content-Type": "application/json"})
    assert_error(answer, 400, "body")


@pytest.mark.parametrize("document", [[a_job()], "a job", 42, None], ids=["array", "string", "number", "null"])
def test_create_rejects_a_body_that_is_not_an_object(demo, document):
    answer = demo.post("/jobs/DEMO", data=json.dumps(document), headers={"Content-Type": "application/json"})
    assert_error(answer, 400, "body")


def test_create_accepts_an_http_repository_url_in_local_mode(demo):
    answer = demo.post("/jobs/DEMO", json=a_job(repository={"url": "http://127.0.0.1:9/ops/playbooks.git",
                                                            "defaultPlaybook": "site.yml"}))
    assert answer.status_code == 201, answer.text
    assert answer.json()[0]["repository"]["url"] == "http://127.0.0.1:9/ops/playbooks.git"


def test_create_rejects_a_non_boolean_immediate(demo):
    assert_error(demo.post("/jobs/DEMO", params={"immediate": "maybe"}, json=a_job()), 400, "immediate")


# -- routes --------------------------------------------------------------------------------------

def test_unknown_route_is_404_json_without_a_token(anonymous):
    assert_error(anonymous.get("/no/such/route"), 404)


def test_unknown_route_is_404_json_with_a_token(demo):
    answer = demo.get("/no/such/route")
    assert_error(answer, 404)
    assert demo.token not in answer.text
