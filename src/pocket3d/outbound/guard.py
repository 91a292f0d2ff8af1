"""Where pocket3d may send a request: the address guard against server-side request forgery.

A URL someone gives pocket3d (a webhook, later an image to fetch) must not make the server reach what only the
server can reach: itself, the private network, link-local and cloud-metadata addresses. The guard resolves the
host, refuses the target when any of its addresses is such a place (unless the operator allowed that host or
network), and hands back the address it checked, so the connection goes exactly there and a second DNS answer
(rebinding) cannot slip past. The client in :mod:`pocket3d.outbound.client` asks it again on every redirect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Protocol

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services (AWS, ECS, GCP, Azure, Alibaba, Oracle). Most are link-local or private anyway; named
# here so the refusal says what they are, and because Azure's wire server is a public address.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "168.63.129.16", "100.100.100.200",
    "192.0.0.192"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundError(Exception):
    """A request that could not be made or answered; ``kind`` names why, for logs and metrics."""

    kind = "error"


class InvalidTarget(OutboundError):
    kind = "invalid"


class Unresolvable(OutboundError):
    kind = "unresolvable"


class ForbiddenTarget(OutboundError):
    kind = "forbidden"

    def __init__(self, message: str, *, host: str, address: IPAddress, reason: str):
        super().__init__(message)
        self.host, self.address, self.reason = host, address, reason


class Resolver(Protocol):
    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``; raises :class:`Unresolvable` when there is none."""


class SystemResolver:
    """The operating system's resolver (getaddrinfo), bounded by a timeout it does not have of its own."""

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        future = self._pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(self.timeout)
        except FutureTimeout:
            raise Unresolvable(f"{host}: no DNS answer within {self.timeout:g} s") from None
        except (socket.gaierror, UnicodeError) as e:
            raise Unresolvable(f"{host} does not resolve ({e})") from None
        found: list[IPAddress] = []
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
        if not found:
            raise Unresolvable(f"{host} has no address")
        return found


def refusal(address: IPAddress) -> str | None:
    """Why a request may not go to ``address``; None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
                                           if address in _NAT64 else None) or address.sixtofour
        if embedded is not None:
            return refusal(embedded)
        if address.teredo is not None:
            return "a Teredo tunnel address"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    if address in _CGNAT:
        return "a shared (carrier-grade NAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, and the address the connection must go to."""

    url: httpx.URL
    host: str  # as in the URL, lower case
    port: int
    address: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with the checked address in place of the host name (the Host header and TLS keep the name)."""
        return self.url.copy_with(host=str(self.address))


class AddressGuard:
    """Checks URLs before any byte goes out. ``allow`` lists host names, addresses and networks (CIDR) that
    may be reached although they are private (``webhooks.allow_hosts``): tests list their loopback receiver,
    an operator an internal service."""

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver | None = None,
                 schemes: tuple[str, ...] = ("http", "https"), allow_setting: str = "webhooks.allow_hosts"):
        self.resolver = resolver or SystemResolver()
        self.schemes = schemes
        self.allow_setting = allow_setting  # named in refusals: where an operator would allow a host
        self._names: set[str] = set()
        self._networks: list[IPNetwork] = []
        for entry in allow:
            entry = entry.strip().lower().rstrip(".")
            try:
                self._networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self._names.add(entry)

    def check(self, url: str | httpx.URL) -> Target:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as e:
            raise InvalidTarget(f"not a valid URL: {e}") from None
        if parsed.scheme not in self.schemes:
            raise InvalidTarget(f"the URL must start with {' or '.join(s + '://' for s in self.schemes)}")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise InvalidTarget("the URL has no host")
        if parsed.userinfo:
            raise InvalidTarget("the URL must not carry a user name or password")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = self.resolver.resolve(host, port)
        if host not in self._names:
            for address in addresses:
                if any(address in network for network in self._networks):
                    continue
                reason = refusal(address)
                if reason is not None:
                    # Any bad answer refuses the name: a name that mixes public and private answers is how a
                    # rebinding attack looks.
                    shown = host if str(address) == host else f"{host} ({address})"
                    raise ForbiddenTarget(f"{shown} is {reason}; requests may not go there unless the operator "
                                          f"lists it in {self.allow_setting}", host=host, address=address,
                                          reason=reason)
        return Target(parsed, host, port, addresses[0])
