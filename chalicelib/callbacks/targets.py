"""Where webhooks may go: the address check made at job write and again at every send.

A callback URL may name only global addresses, on the scheme's own port (443 for https, 80 for
plain http where the rules allow it). Every address its host resolves to must pass, so a name
cannot hide a private address among public ones, and the sender connects to an address checked
here, never resolving the name again (no DNS rebinding). IPv6 forms that carry an IPv4 address
(IPv4-mapped, 6to4, Teredo) are judged by the IPv4 address they carry as well. Where the rules
allow loopback (local mode), loopback addresses are allowed on any port but the service's own.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from chalicelib.platform.config import WebhookRules

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses a connection to them could reach (socket.getaddrinfo by default).
Resolver = Callable[[str, int], list[str]]

DEFAULT_PORTS = {"https": 443, "http": 80}
# Not global, whatever the Python version's is_global says: shared address space (carrier-grade
# NAT, RFC 6598) and the instance metadata endpoints of EC2 and ECS.
NEVER = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("169.254.0.0/16"),
         ipaddress.ip_network("fd00:ec2::254/128"))


class UnsafeTarget(Exception):
    """The URL names an address or port webhooks may not reach."""


class UnresolvedTarget(UnsafeTarget):
    """The URL's host does not resolve (now): it may later."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: connect to `address`, speak `scheme`, present `hostname` (Host, SNI)."""

    scheme: str
    hostname: str
    port: int
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        """The address to connect to: one of those checked."""
        return self.addresses[0]


def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as the system resolver answers."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvedTarget(f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})") from None
    return [info[4][0].split("%")[0] for info in infos]


def carried_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (6to4's, Teredo's server and client), if any."""
    if address.version != 6:
        return []
    carried = []
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    return carried


def is_global(address: IPAddress) -> bool:
    """Whether `address` is a global unicast address, of the public internet."""
    return (address.is_global and not address.is_multicast and not address.is_reserved
            and not address.is_unspecified and not address.is_link_local
            and not (address.version == 6 and address.is_site_local)
            and not any(address in network for network in NEVER if network.version == address.version))


def address_refusal(address: IPAddress, scheme: str, port: int, rules: WebhookRules) -> str | None:
    """Why a webhook may not be posted to `address`:`port` over `scheme` (None: it may)."""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # the IPv4 address a connection to it reaches
    if address.is_loopback and rules.allow_loopback:
        if port in rules.refused_loopback_ports:
            return f"port {port} on loopback is the service's own"
        return None
    if not is_global(address):
        return f"{address} is not a public address"
    for carried in carried_ipv4(address):
        if not is_global(carried):
            return f"{address} carries {carried}, which is not a public address"
    if port != DEFAULT_PORTS[scheme]:
        return f"port {port} is not allowed: {scheme} callbacks go to port {DEFAULT_PORTS[scheme]}"
    return None


def check_target(url: str, rules: WebhookRules, resolve: Resolver = system_resolve) -> Target:
    """The target of a webhook URL, with every address its host resolves to now checked.

    UnresolvedTarget when the host does not resolve, UnsafeTarget when the scheme, the port or
    any of the addresses is not allowed.
    """
    parts = urlsplit(url)
    if parts.scheme not in rules.schemes or parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UnsafeTarget(f"{parts.scheme or 'no'} scheme is not allowed")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeTarget("the port is not a number from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORTS[parts.scheme]
    if port == 0:
        raise UnsafeTarget("the port is not a number from 1 to 65535")
    if port != DEFAULT_PORTS[parts.scheme] and not rules.allow_loopback:
        # Whatever the host resolves to: only loopback may take another port, and it may not here.
        raise UnsafeTarget(f"port {port} is not allowed: {parts.scheme} callbacks go to port "
                           f"{DEFAULT_PORTS[parts.scheme]}")
    hostname = parts.hostname
    try:
        literal: IPAddress | None = ipaddress.ip_address(hostname.split("%")[0])
    except ValueError:
        literal = None
    found = [str(literal)] if literal is not None else resolve(hostname, port)
    if not found:
        raise UnresolvedTarget(f"{hostname} does not resolve")
    addresses: list[str] = []
    for text in found:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise UnsafeTarget(f"{hostname} resolves to {text!r}, not an IP address") from None
        refusal = address_refusal(address, parts.scheme, port, rules)
        if refusal:
            shown = refusal if literal is not None else f"{hostname} resolves to {address}: {refusal}"
            raise UnsafeTarget(shown)
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # connect over IPv4, to the address judged
        if str(address) not in addresses:
            addresses.append(str(address))
    return Target(parts.scheme, hostname, port, tuple(addresses))


def refused_target(url: str, rules: WebhookRules, resolve: Resolver = system_resolve) -> str | None:
    """Why a callback URL may not be stored (None: it may), judged at job write.

    A name that does not resolve now is accepted: its addresses are checked again at each send.
    """
    try:
        check_target(url, rules, resolve)
    except UnresolvedTarget:
        return None
    except UnsafeTarget as exc:
        return str(exc)
    return None
