"""Where webhooks may go: the address check made at job write and again at every send."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from chalicelib.platform.config import WebhookRules

# The instance metadata endpoints of EC2 and ECS, never a webhook target.
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("169.254.170.2"),
            ipaddress.ip_address("fd00:ec2::254")}


class UnsafeTarget(Exception):
    """The URL resolves to an address webhooks may not reach."""


def safe_address(url: str, rules: WebhookRules) -> tuple[str, str, int]:
    """(scheme, IP to connect to, port) of a webhook URL, checked now (so DNS rebinding cannot help).

    Metadata, link-local, multicast and unspecified addresses are never allowed; loopback and
    private ones only as `rules` say (on AWS: HTTPS to public addresses only).
    """
    parts = urlsplit(url)
    if parts.scheme not in rules.schemes or not parts.hostname:
        raise UnsafeTarget(f"{parts.scheme or 'no'} scheme is not allowed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeTarget(f"{parts.hostname} does not resolve ({exc.strerror})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address in METADATA or address.is_link_local or address.is_multicast or address.is_unspecified:
            continue
        if address.is_loopback and not rules.allow_loopback:
            continue
        if (address.is_private or address.is_reserved) and not address.is_loopback and not rules.allow_private:
            continue
        return parts.scheme, str(address), port
    raise UnsafeTarget(f"{parts.hostname} resolves to no address webhooks may reach")


def refused_target(url: str, rules: WebhookRules) -> str | None:
    """Why a callback URL may not be stored (None: it may), judged at job write.

    A name that does not resolve now is accepted: its address is checked again at each send.
    """
    try:
        safe_address(url, rules)
    except UnsafeTarget as exc:
        if "does not resolve" in str(exc):
            return None
        return str(exc)
    return None
