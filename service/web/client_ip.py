"""The real client address behind trusted reverse proxies (nginx, load balancers)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


#: Addresses already judged, per set of trusted networks.
_judged: dict[int, tuple[tuple[Network, ...], dict[str, bool]]] = {}
_MAX_JUDGED = 4096


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    """Whether ``address`` is in one of the ``trusted`` networks.

    Every stream and control-API call asks about its peer, and peers repeat
    (proxies, the same clients), so answers are kept. They are kept per tuple
    object rather than by its value: hashing a tuple of networks costs more
    than parsing the address. Each entry holds its tuple, so the id it is
    filed under cannot be reused while the entry exists.
    """
    entry = _judged.get(id(trusted))
    if entry is None:
        if len(_judged) >= 16:
            _judged.clear()
        entry = _judged[id(trusted)] = (trusted, {})
    answers = entry[1]
    answer = answers.get(address)
    if answer is None:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            answer = False
        else:
            answer = any(ip in net for net in trusted)
        if len(answers) >= _MAX_JUDGED:
            answers.clear()
        answers[address] = answer
    return answer


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
