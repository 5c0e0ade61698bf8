"""The real client address behind trusted reverse proxies (nginx, load balancers)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# Every stream and control-API call asks about its peer, and peers repeat
# (proxies, the same clients): parsing an address costs more than the lookup.
@functools.lru_cache(maxsize=4096)
def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_ip(peer: str, headers: Mapping[str, str], trusted: tuple[Network, ...]) -> str:
    """The address to log for a request that arrived from ``peer``.

    Forwarding headers are believed only when ``peer`` is a trusted proxy. In
    ``X-Forwarded-For`` the right-most address that is not itself a trusted proxy
    is the client (everything left of it could be forged by that client). A
    value that is not an IP address ends the walk: the nearest valid address
    to its right is used instead.
    """
    if not _trusted(peer, trusted):
        return peer
    forwarded = headers.get("X-Forwarded-For")
    if forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        nearest = peer
        for hop in reversed(hops):
            if not _is_ip(hop):
                return nearest
            if not _trusted(hop, trusted):
                return hop
            nearest = hop
        if hops:
            return nearest
    real_ip = headers.get("X-Real-IP", "").strip()
    return real_ip if _is_ip(real_ip) else peer


@functools.lru_cache(maxsize=4096)
def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
