"""The inventory and --limit a run gets (pure functions of the job and the run)."""
from runner_lambda.masking import Masker
from runner_lambda.workspace import build_inventory, host_vars_for


def test_targets_become_the_limit_and_unknown_targets_join_the_inventory():
    inventory, limit = build_inventory([{"id": "web1", "hostVars": {"tier": "web"}}], ["web1", "extra"], {}, None)
    assert limit == "web1,extra"
    assert inventory["all"]["hosts"]["web1"] == {"tier": "web"} and inventory["all"]["hosts"]["extra"] == {}


def test_all_means_no_limit_and_its_vars_apply_to_every_host():
    inventory, limit = build_inventory([{"id": "all", "hostVars": {"env": "prod"}}, {"id": "a", "hostVars": {}}],
                                       ["all"], {}, None)
    assert limit is None and inventory["all"]["vars"] == {"env": "prod"} and "all" not in inventory["all"]["hosts"]


def test_host_keys_and_the_default_key_are_referenced_by_file():
    inventory, _ = build_inventory([{"id": "a", "hostVars": {}}, {"id": "b", "hostVars": {}}], ["a", "b"],
                                   {"a": "/w/keys/host-0"}, "/w/keys/default")
    assert inventory["all"]["hosts"]["a"]["ansible_ssh_private_key_file"] == "/w/keys/host-0"
    assert "ansible_ssh_private_key_file" not in inventory["all"]["hosts"]["b"]
    assert inventory["all"]["vars"]["ansible_ssh_private_key_file"] == "/w/keys/default"


def test_a_key_file_the_job_names_itself_is_kept():
    inventory, _ = build_inventory([{"id": "a", "hostVars": {"ansible_ssh_private_key_file": "/mine"}}], ["a"],
                                   {"a": "/w/keys/host-0"}, None)
    assert inventory["all"]["hosts"]["a"]["ansible_ssh_private_key_file"] == "/mine"


def test_local_connections_use_the_interpreter_running_ansible():
    assert host_vars_for("localhost", {}) == {"ansible_connection": "local",
                                              "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    assert host_vars_for("web", {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"})[
        "ansible_python_interpreter"] == "/usr/bin/python3"
    assert host_vars_for("localhost", {"ansible_connection": "ssh"}) == {"ansible_connection": "ssh"}


def test_the_masker_hides_every_secret_longest_first():
    mask = Masker(["hunter22", "hunter2222"])
    assert mask("pw=hunter2222 and hunter22") == "pw=******** and ********"
    assert Masker(["abc"])("abc") == "abc"  # too short to mask without mangling ordinary text
