"""Which callback URLs a tenant may give: the upstream POSTs results there on the caller's behalf.

Launch sends callbacks from inside its own network, so a URL that points into it would let a caller
reach what it cannot reach itself. The fence has three parts, all pure (the host is resolved by
`admission.Gate`, through `access.lookups`):

1. One reading of the URL. Launch's sender (`requests`) parses like a WHATWG browser, Python's
   `urlsplit` does not, and they disagree on backslashes, user info, percent-encoded or non-ASCII
   hosts, numeric hosts (`2130706433`, `0x7f.1`) and more. `parse_callback_url` accepts only a
   strict subset on which every parser agrees, `http[s]://host[:port][/path][?query]` in plain ASCII,
   and refuses everything else with INVALID_ARGUMENT, so the host checked is the host Launch calls.
   `translate.to_upstream_body` reads every callback URL with it, in open mode too.
2. The tenant's policy: https unless it allows http, and one of its hosts (exact or glob), else
   PERMISSION_DENIED.
3. No internal address (unless the tenant allows them): `internal_network` checks an address against
   one explicit table (`BLOCKED`), not `ipaddress.is_private`, whose answers change between Python
   releases, and looks inside every IPv6 form that carries an IPv4 address (mapped, NAT64, 6to4,
   Teredo). An address is only allowed in global unicast space; everything else is refused.

The upstream resolves the name again when it sends, so a name that changes its answers in between
(DNS rebinding) is not caught here: the allow-list of hosts is the real fence.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from launch_gateway.server.access.tenants import CallbackPolicy
from launch_gateway.server.errors import CallbackRefused, InvalidArgument

FIELD = "request.callback_url"
MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _invalid(reason: str) -> InvalidArgument:
    return InvalidArgument(FIELD, reason)


# --- one reading of the URL ----------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackURL:
    """What a callback URL names: lower-case scheme and host (IPv6 without brackets), and the port."""

    scheme: str
    host: str
    port: int
    address: IPAddress | None  # the host, when it is an IP literal


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_DOTTED_QUAD = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
# WHATWG reads a host whose last label is a number (decimal, or 0x hex) as an IPv4 address in any of
# its old forms (127.1, 0x7f.1, 017700000001): only the canonical dotted quad is accepted.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Path and query: RFC 3986 unreserved, sub-delims, ":", "/", "?" and percent escapes. Not "@" or "#"
# (refused before, with their own reasons), nor `[]{}|^<>"` and backquote, which parsers treat differently.
_PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:/?%")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def parse_callback_url(url: str) -> CallbackURL:
    """The URL's parts, or INVALID_ARGUMENT naming the first thing that parsers could read differently."""
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"longer than {MAX_URL_LENGTH} characters")
    if not url.isascii():
        raise _invalid("must be ASCII (write an international host name in its xn-- form)")
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise _invalid("must not contain spaces or control characters")
    if "\\" in url:
        raise _invalid("must not contain a backslash: parsers disagree on whether it ends the host")
    if "@" in url:
        raise _invalid("must not contain '@': a callback URL has no user info, and parsers disagree on where it ends")
    if "#" in url:
        raise _invalid("must not have a fragment ('#'): the sender drops it, and parsers disagree on where it starts")
    scheme_match = _SCHEME.match(url)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme not in _DEFAULT_PORTS or not url[len(scheme) + 1 :].startswith("//"):
        raise _invalid("must be an absolute https:// URL (or http://, where the tenant allows it)")
    rest = url[len(scheme) + 3 :]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    host, port_text = _split_authority(authority)
    address = _host_address(host)
    if port_text is None:
        port = _DEFAULT_PORTS[scheme]
    elif _PORT.fullmatch(port_text) and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise _invalid("the port must be a number from 1 to 65535")
    bad = next((ch for ch in tail if ch not in _PATH_CHARACTERS), None)
    if bad is not None:
        raise _invalid(f"the path and query must not contain {bad!r}")
    if _PERCENT.search(tail):
        raise _invalid("a percent sign in the path or query must start an escape like %2F")
    return CallbackURL(scheme, host, port, address)


def _split_authority(authority: str) -> tuple[str, str | None]:
    """(host, port text or None); the host lower-case, an IPv6 literal without its brackets."""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0 or (close + 1 < len(authority) and authority[close + 1] != ":"):
            raise _invalid("an IPv6 host must be written [address] or [address]:port")
        literal = authority[1:close]
        if "%" in literal:
            raise _invalid("an IPv6 host must not carry a zone (%)")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _invalid("the host in brackets is not an IPv6 address") from None
        port = authority[close + 2 :] if close + 1 < len(authority) else None
        return literal.lower(), port
    if "%" in authority:
        raise _invalid("the host must not be percent-encoded")
    host, colon, port = authority.partition(":")
    if not host:
        raise _invalid("must name a host")
    return host.lower(), port if colon else None


def _host_address(host: str) -> IPAddress | None:
    """The IP address a host literal is, None for a name; INVALID_ARGUMENT for anything else."""
    if ":" in host:  # only an IPv6 literal gets here with a colon
        return ipaddress.IPv6Address(host)
    if len(host) > MAX_HOST_LENGTH:
        raise _invalid(f"the host is longer than {MAX_HOST_LENGTH} characters")
    if host.endswith("."):
        raise _invalid("the host must not end with a dot (a trailing dot): write the name without it")
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        if not _DOTTED_QUAD.fullmatch(host) or any(int(part) > 255 for part in labels):
            raise _invalid("a numeric host must be an IPv4 address as four decimal numbers 0-255, no leading zeros")
        return ipaddress.IPv4Address(host)
    for label in labels:
        if not label:
            raise _invalid("the host has an empty label (two dots in a row)")
        if len(label) > 63:
            raise _invalid("a host label is longer than 63 characters")
        if not _LABEL.fullmatch(label):
            raise _invalid("host labels are letters, digits and inner hyphens only")
    return None


# --- the tenant's policy -------------------------------------------------------------------------


def check_policy(target: CallbackURL, policy: CallbackPolicy) -> None:
    """CallbackRefused (PERMISSION_DENIED) unless the scheme and the host fit the tenant's policy."""
    if target.scheme != "https" and not policy.allow_http:
        raise CallbackRefused(f"must use https, not {target.scheme}")
    if not any(fnmatch.fnmatchcase(target.host, pattern) for pattern in policy.hosts):
        raise CallbackRefused(f"host {target.host} is not one of this tenant's callback hosts")


def check_addresses(target: CallbackURL, addresses: Iterable[str]) -> None:
    """CallbackRefused if any of the host's addresses is internal (one is enough: the sender picks)."""
    for address in addresses:
        why = internal_network(address)
        if why is not None:
            verb = "is" if target.address is not None else "resolves to"
            raise CallbackRefused(f"host {target.host} {verb} an internal address ({address}), in {why}")


# --- internal networks ---------------------------------------------------------------------------


def _networks(*rows: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), f"{net} ({name})") for net, name in rows)


# Refused outright. IPv4 from the IANA special-purpose registry (RFC 6890 and later); IPv6: everything
# outside global unicast 2000::/3 is refused anyway (loopback, ULA, link-local, site-local, multicast, ...),
# so the IPv6 rows are the special blocks inside it, and the rows outside it only name the reason.
BLOCKED = _networks(
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private, RFC 1918"),
    ("100.64.0.0/10", "shared address space, CGNAT; cloud metadata at 100.100.100.200"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local; cloud metadata at 169.254.169.254"),
    ("172.16.0.0/12", "private, RFC 1918"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private, RFC 1918"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, and the broadcast address"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible, deprecated"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local, deprecated"),
    ("ff00::/8", "multicast"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _low32(ip: int) -> int:
    return ip & 0xFFFFFFFF


# IPv6 forms that carry an IPv4 address, and where: such an address is refused if the IPv4 one is.
EMBEDDING: tuple[tuple[ipaddress.IPv6Network, str, tuple[Callable[[int], int], ...]], ...] = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), "IPv4-mapped", (_low32,)),
    (ipaddress.IPv6Network("64:ff9b::/96"), "NAT64", (_low32,)),
    (ipaddress.IPv6Network("2002::/16"), "6to4", (lambda ip: (ip >> 80) & 0xFFFFFFFF,)),
    # Teredo: the server's IPv4 in bits 32-63, the client's in the last 32 bits, inverted.
    (ipaddress.IPv6Network("2001::/32"), "Teredo", (lambda ip: (ip >> 64) & 0xFFFFFFFF, lambda ip: ~ip & 0xFFFFFFFF)),
)


def internal_network(address: str) -> str | None:
    """Why `address` is internal (the network and its name), or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    for network, why in BLOCKED:
        if ip.version == network.version and ip in network:
            return why
    if isinstance(ip, ipaddress.IPv6Address):
        for prefix, name, extractors in EMBEDDING:
            if ip in prefix:
                for extract in extractors:
                    embedded = ipaddress.IPv4Address(extract(int(ip)))
                    inner = internal_network(str(embedded))
                    if inner is not None:
                        return f"{prefix} ({name}) around {embedded}, in {inner}"
                return None
        if ip not in _GLOBAL_UNICAST:
            return "IPv6 outside global unicast 2000::/3"
    return None
