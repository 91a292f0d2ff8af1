"""The address guard and the outbound client: what may be reached, on every hop, with the connection going to
the address that was checked. Names resolve through a stub (no DNS here); every byte goes to loopback only."""

from __future__ import annotations

import ipaddress

import pytest
from receiver import Receiver, StubResolverForTests

from pocket3d.outbound import AddressGuard, ForbiddenTarget, InvalidTarget, OutboundClient, refusal
from pocket3d.outbound.client import OutboundTimeout, TooManyRedirects


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.9", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"), ("168.63.129.16", "metadata"), ("100.100.100.200", "metadata"),
    ("169.254.10.1", "link-local"), ("fe80::1", "link-local"), ("100.64.1.1", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("240.0.0.1", "reserved"),
    ("192.0.2.10", "private"),  # documentation (Python counts it private)
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
])
def test_addresses_only_the_server_could_reach_are_refused(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason, (address, reason)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    resolver = StubResolverForTests({"public.test": [["93.184.216.34"]],
                                     "mixed.test": [["93.184.216.34", "10.0.0.7"]],
                                     "metadata.test": [["169.254.169.254"]]})
    guard = AddressGuard(resolver=resolver)
    assert str(guard.check("https://public.test/hook").address) == "93.184.216.34"
    with pytest.raises(ForbiddenTarget, match="private"):
        guard.check("https://mixed.test/hook")
    with pytest.raises(ForbiddenTarget, match="metadata") as e:
        guard.check("http://metadata.test/latest/meta-data/")
    assert e.value.host == "metadata.test" and str(e.value.address) == "169.254.169.254"
    for bad in ("ftp://public.test/", "http:///nohost", "https://user:pw@public.test/", "not a url"):
        with pytest.raises(InvalidTarget):
            guard.check(bad)


def test_allow_hosts_lets_named_hosts_and_networks_through() -> None:
    resolver = StubResolverForTests({"internal.test": [["10.0.0.7"]], "other.test": [["10.0.0.8"]]})
    guard = AddressGuard(["internal.test", "127.0.0.0/8"], resolver=resolver)
    assert str(guard.check("http://internal.test/").address) == "10.0.0.7"
    assert str(guard.check("http://127.0.0.5:9/").address) == "127.0.0.5"
    with pytest.raises(ForbiddenTarget):
        guard.check("http://other.test/")
    with pytest.raises(ForbiddenTarget):
        guard.check("http://[::1]/")


def test_the_connection_goes_to_the_checked_address_with_the_name_kept() -> None:
    # hooks.test exists only in the stub: the request can reach the receiver only through the checked address
    resolver = StubResolverForTests({"hooks.test": [["127.0.0.1"]]})
    with Receiver() as rx:
        client = OutboundClient(AddressGuard(["127.0.0.1"], resolver=resolver), timeout=5)
        r = client.request("POST", f"http://hooks.test:{rx.port}/in?token=1", content=b"{}")
        assert r.status_code == 200
        got = rx.wait_for(1)[0]
        assert got.path == "/in?token=1" and got.headers["host"] == f"hooks.test:{rx.port}" and got.body == b"{}"


def test_redirects_are_checked_again_and_carry_no_cookies() -> None:
    def respond(got, n):
        if got.path == "/to-metadata":
            return 307, {"location": "http://169.254.169.254/latest/meta-data/"}, b""
        if got.path == "/start":
            return 307, {"location": "/next", "set-cookie": "session=abc; Path=/"}, b""
        if got.path == "/loop":
            return 308, {"location": "/loop"}, b""
        return 200, {}, b"done"

    with Receiver(respond=respond) as rx:
        client = OutboundClient(AddressGuard(["127.0.0.1"]), timeout=5, max_redirects=3)
        r = client.request("POST", f"{rx.url}/start", content=b"payload")
        assert r.status_code == 200 and r.body == b"done" and r.url.endswith("/next")
        start, nxt = rx.wait_for(2)
        assert nxt.method == "POST" and nxt.body == b"payload", "a 307 keeps the method and the body"
        assert "cookie" not in nxt.headers, "what a receiver sets is never sent back"
        with pytest.raises(ForbiddenTarget, match="metadata"):
            client.request("POST", f"{rx.url}/to-metadata", content=b"x")
        with pytest.raises(TooManyRedirects):
            client.request("POST", f"{rx.url}/loop", content=b"x")


def test_a_post_is_not_turned_into_a_get_by_a_302() -> None:
    with Receiver(respond=lambda got, n: (302, {"location": "/elsewhere"}, b"")) as rx:
        client = OutboundClient(AddressGuard(["127.0.0.1"]), timeout=5)
        r = client.request("POST", f"{rx.url}/hook", content=b"x")
        assert r.status_code == 302 and not r.ok
        assert len(rx.requests) == 1


def test_time_and_the_size_of_an_answer_are_bounded() -> None:
    import time

    def respond(got, n):
        if got.path == "/slow":
            time.sleep(2)
        return 200, {}, b"x" * 1_000_000

    with Receiver(respond=respond) as rx:
        client = OutboundClient(AddressGuard(["127.0.0.1"]), timeout=0.5, max_response_size=1024)
        r = client.request("GET", f"{rx.url}/big")
        assert len(r.body) == 1024 and r.truncated
        started = time.monotonic()
        with pytest.raises(OutboundTimeout):
            client.request("GET", f"{rx.url}/slow")
        assert time.monotonic() - started < 1.9
