"""Client addresses as the security rules compare them.

A host's IPv6 addresses change within its /64 (privacy addresses), and a dual-stack
listener reports IPv4 clients as IPv4-mapped IPv6 addresses: :func:`address_key` makes
both compare as the same client (failed logins in ``msg/lockout.py``, file logins in
``file/permits.py``).
"""

from __future__ import annotations

import ipaddress


def address_key(host: str) -> str:
    """What ``host`` counts as: the address, or an IPv6 address's /64 (an IPv4-mapped one
    as IPv4)."""
    if ":" not in host:
        return host  # IPv4, as the transport gives it (dotted quad)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
