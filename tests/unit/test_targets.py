"""Where webhooks may go: global addresses on the scheme's port; loopback too in local mode.

Names resolve through a resolver given to the check (a table here, as a DNS server would answer),
or through the system's for `localhost`; literals need none.
"""
from __future__ import annotations

import pytest

from chalicelib.callbacks.targets import (Target, UnresolvedTarget, UnsafeTarget, check_target,
                                          refused_target)
from chalicelib.jobs.spec import validate_callback_url
from chalicelib.platform.config import LOCAL_WEBHOOK_RULES, Settings, WebhookRules
from chalicelib.platform.errors import InvalidRequest

ON_AWS = Settings().webhook_rules
IN_LOCAL_MODE = Settings.from_environ({"RUNNER_LOCAL": "1", "RUNNER_PORT": "8123",
                                       "AWS_ENDPOINT_URL": "http://127.0.0.1:45678"}).webhook_rules


def dns(table: dict[str, list[str]]):
    """A resolver answering from `table`; any other name does not resolve."""
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise UnresolvedTarget(f"{host} does not resolve")
        return table[host]
    return resolve


NOT_GLOBAL = [
    "10.0.0.1", "10.255.255.254", "172.16.0.1", "172.31.255.254", "192.168.0.10",
    "100.64.0.1", "100.127.255.254",                      # shared address space (carrier-grade NAT)
    "169.254.169.254", "169.254.170.2", "169.254.1.1",    # metadata, link-local
    "127.0.0.1", "127.1.2.3", "0.0.0.0", "255.255.255.255", "240.0.0.1",
    "224.0.0.1", "239.255.255.250",                       # multicast
    "192.0.2.1", "198.18.0.1",                            # documentation, benchmarking
    "[::1]", "[::]", "[fc00::1]", "[fd12:3456::1]", "[fd00:ec2::254]", "[fe80::1]", "[fec0::1]",
    "[ff02::1]", "[ff0e::1]", "[2001:db8::1]",
    "[::ffff:10.0.0.1]", "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]",  # IPv4-mapped
    "[2002:0a00:0001::]", "[2002:7f00:1::1]", "[2002:a9fe:a9fe::]",         # 6to4 of private ones
    "[2001:0:4136:e378:8000:63bf:f5ff:fffe]",            # Teredo, client 10.0.0.1
    "[64:ff9b::a00:1]",                                   # NAT64 of 10.0.0.1
]


@pytest.mark.parametrize("host", NOT_GLOBAL)
def test_on_aws_only_global_addresses_are_reached(host):
    with pytest.raises(UnsafeTarget) as refused:
        check_target(f"https://{host}/hook", ON_AWS)
    assert not isinstance(refused.value, UnresolvedTarget)


@pytest.mark.parametrize("host", [h for h in NOT_GLOBAL if h not in ("127.0.0.1", "127.1.2.3", "[::1]",
                                                                     "[::ffff:127.0.0.1]")])
def test_local_mode_refuses_them_too_but_loopback(host):
    with pytest.raises(UnsafeTarget):
        check_target(f"http://{host}/hook", IN_LOCAL_MODE)
    with pytest.raises(UnsafeTarget):
        check_target(f"http://{host}:9000/hook", IN_LOCAL_MODE)


@pytest.mark.parametrize("url, address", [
    ("https://93.184.216.34/hook", "93.184.216.34"),
    ("https://93.184.216.34:443/hook", "93.184.216.34"),
    ("https://[2606:4700::1111]/hook", "2606:4700::1111"),
    ("https://[::ffff:93.184.216.34]/hook", "93.184.216.34"),     # judged, and reached, as IPv4
    ("https://[2002:5db8:d822::1]/hook", "2002:5db8:d822::1"),    # 6to4 of a public address
])
def test_a_global_address_on_443_is_reached_as_checked(url, address):
    assert check_target(url, ON_AWS).address == address


@pytest.mark.parametrize("url", ["https://93.184.216.34:8443/hook", "https://93.184.216.34:80/hook",
                                 "https://hooks.example.com:8443/x", "https://unknown.invalid:22/x",
                                 "http://93.184.216.34/hook"])
def test_on_aws_only_https_on_443(url):
    resolve = dns({"hooks.example.com": ["93.184.216.34"]})
    with pytest.raises(UnsafeTarget):
        check_target(url, ON_AWS, resolve)
    # refused at write even when the name does not resolve now: no address takes another port
    assert refused_target(url, ON_AWS, resolve)


def test_plain_http_where_allowed_goes_to_port_80_only_unless_on_loopback():
    assert check_target("http://93.184.216.34/x", IN_LOCAL_MODE).port == 80
    assert check_target("http://93.184.216.34:80/x", IN_LOCAL_MODE).port == 80
    assert check_target("https://93.184.216.34/x", IN_LOCAL_MODE).port == 443
    for url in ("http://93.184.216.34:8080/x", "http://93.184.216.34:443/x", "https://93.184.216.34:80/x"):
        with pytest.raises(UnsafeTarget, match="port"):
            check_target(url, IN_LOCAL_MODE)


@pytest.mark.parametrize("url", ["https://h.example.com:0/x", "https://h.example.com:99999/x",
                                 "https://h.example.com:port/x", "ftp://93.184.216.34/x", "https:///x"])
def test_malformed_ports_and_other_schemes_are_refused(url):
    with pytest.raises(UnsafeTarget):
        check_target(url, IN_LOCAL_MODE, dns({"h.example.com": ["93.184.216.34"]}))


def test_every_address_of_a_name_must_pass():
    resolve = dns({"mixed.example.com": ["93.184.216.34", "10.0.0.1"],
                   "v6.example.com": ["93.184.216.34", "fd00::1"],
                   "public.example.com": ["93.184.216.34", "2606:4700::1111", "93.184.216.34"]})
    for name in ("mixed.example.com", "v6.example.com"):
        with pytest.raises(UnsafeTarget, match=f"{name} resolves to"):
            check_target(f"https://{name}/hook", ON_AWS, resolve)
    assert check_target("https://public.example.com/hook", ON_AWS, resolve) == Target(
        "https", "public.example.com", 443, ("93.184.216.34", "2606:4700::1111"))


def test_a_name_of_a_private_address_is_refused_and_one_that_does_not_resolve_is_stored():
    resolve = dns({"intranet.example.com": ["192.168.1.20"]})
    assert "192.168.1.20" in refused_target("https://intranet.example.com/x", ON_AWS, resolve)
    assert refused_target("https://later.example.com/x", ON_AWS, resolve) is None  # checked at send
    with pytest.raises(UnresolvedTarget):
        check_target("https://later.example.com/x", ON_AWS, resolve)


def test_localhost_resolves_to_loopback_refused_on_aws_allowed_locally():
    with pytest.raises(UnsafeTarget, match="localhost resolves to"):
        check_target("https://localhost/hook", ON_AWS)
    target = check_target("http://localhost:9000/hook", IN_LOCAL_MODE)
    assert target.port == 9000 and target.hostname == "localhost"
    assert set(target.addresses) <= {"127.0.0.1", "::1"}


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/x", "http://127.0.0.5:31337/x", "http://[::1]:9000/x",
                                 "https://127.0.0.1/x", "http://127.0.0.1/x", "http://[::ffff:127.0.0.1]:9000/x"])
def test_local_mode_allows_loopback_on_any_port(url):
    assert check_target(url, IN_LOCAL_MODE).address.startswith(("127.", "::1"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:45678/moto-api/reset", "http://localhost:45678/x",
                                 "http://127.0.0.2:45678/x", "http://[::1]:45678/x",
                                 "http://127.0.0.1:8123/jobs/DEMO", "http://localhost:8123/x"])
def test_local_mode_never_reaches_its_own_emulator_or_api(url):
    with pytest.raises(UnsafeTarget, match="the service's own"):
        check_target(url, IN_LOCAL_MODE)


def test_local_mode_knows_its_ports_from_its_environment():
    default = Settings.from_environ({"RUNNER_LOCAL": "1"}).webhook_rules
    assert default.refused_loopback_ports == {8000}
    assert IN_LOCAL_MODE.refused_loopback_ports == {8123, 45678}
    assert IN_LOCAL_MODE.allow_loopback and IN_LOCAL_MODE.schemes == LOCAL_WEBHOOK_RULES.schemes
    assert ON_AWS == WebhookRules() == Settings.from_environ({"RUNNER_LOCAL": "0"}).webhook_rules
    assert not ON_AWS.allow_loopback and ON_AWS.schemes == ("https",)
    assert (Settings.from_environ({"RUNNER_LOCAL": "1"}).report_aws_calls, Settings.from_environ({}).report_aws_calls) \
        == (True, False)


@pytest.mark.parametrize("url", ["https://10.0.0.5/hook", "https://localhost/hook", "https://169.254.169.254/x",
                                 "https://93.184.216.34:8443/x", "https://[2002:0a00:0001::]/x"])
def test_a_job_cannot_name_such_a_target_and_the_400_names_the_field(url):
    with pytest.raises(InvalidRequest) as raised:
        validate_callback_url(url, ON_AWS, field_name="callbacks[0].url")
    assert raised.value.field == "callbacks[0].url"
    assert validate_callback_url("https://hooks.invalid/runner", ON_AWS, field_name="x")  # checked at send
