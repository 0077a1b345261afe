"""Which callback URLs a tenant may give: the upstream POSTs results there on the caller's behalf.

A callback must name one of the tenant's allowed hosts (exact or glob), use https unless the tenant
allows http, and must not point at loopback, link-local, private or otherwise internal addresses
unless the tenant allows that explicitly: otherwise a caller could make Launch POST into networks it
cannot reach itself. The host's addresses are resolved by the caller of `check_callback` (I/O stays
at the edge); the upstream resolves again when it sends, so a name that changes its answers in
between is not caught here, and the allow-list of hosts is the real fence. Pure.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from launch_gateway.server.access.tenants import CallbackPolicy
from launch_gateway.server.errors import Code, GatewayError, InvalidArgument

FIELD = "request.callback_url"


class CallbackRefused(GatewayError):
    """The callback URL breaks the tenant's policy."""

    code = Code.PERMISSION_DENIED


def callback_host(url: str) -> str:
    """The URL's host, lower-cased, without brackets (IPv6)."""
    host = urlsplit(url).hostname
    if not host:
        raise InvalidArgument(FIELD, "must name a host")
    return host.lower()


def is_internal(address: str) -> bool:
    """True for loopback, link-local, private, unspecified, reserved and multicast addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_unspecified or ip.is_reserved or ip.is_multicast


def check_callback(url: str, policy: CallbackPolicy, addresses: Iterable[str]) -> None:
    """Raise CallbackRefused (PERMISSION_DENIED) unless `url` fits `policy`; `addresses` are the host's."""
    scheme = urlsplit(url).scheme.lower()
    host = callback_host(url)
    if scheme != "https" and not (scheme == "http" and policy.allow_http):
        raise CallbackRefused(f"{FIELD}: must use https, not {scheme}")
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in policy.hosts):
        raise CallbackRefused(f"{FIELD}: host {host} is not one of this tenant's callback hosts")
    if not policy.allow_private:
        for address in addresses:
            if is_internal(address):
                raise CallbackRefused(f"{FIELD}: host {host} resolves to an internal address ({address})")
