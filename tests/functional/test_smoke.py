def test_create_and_get_job(client):
    body = {"repository": {"url": "https://example.com/r.git", "defaultPlaybook": "site.yml"}, "hosts": [{"id": "localhost"}]}
    answer = client.post("/jobs/DEMO", body)
    assert answer.status == 201, answer.body
    job = answer.body[0]
    got = client.get(f"/jobs/DEMO/{job['id']}")
    assert got.status == 200 and got.body == job
    assert client.other.get(f"/jobs/DEMO/{job['id']}").status == 403
    assert client.anonymous.get(f"/jobs/DEMO/{job['id']}").status == 401
