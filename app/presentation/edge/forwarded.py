"""Which client a request comes from behind trusted proxies: the `X-Forwarded-For` rule.

The rule is uvicorn's proxy-headers rule (`--forwarded-allow-ips`, `ProxyHeadersMiddleware`
of uvicorn 0.54), owned here so that the redirect path answered by the edge protocol does
not reach into uvicorn: only when the connection's peer is trusted, the values of every
`X-Forwarded-For` header are read as one list (joined by ", "), and the client is its
rightmost address that is not a trusted proxy (the leftmost when all are, any port after
an IPv4 address or a bracketed IPv6 one dropped); "*" trusts every peer and takes the
leftmost. The app's path (everything else, or every request with BALANCER_FAST_PATH off)
still runs uvicorn's middleware: the e2e suite answers the same in both modes, so a
uvicorn whose rule differs fails it.
"""

import functools
import ipaddress

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host(value: str) -> str:
    """The host of a forwarded `host`, `host:port` or `[IPv6]:port` value."""
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value
        rest = value[end + 1 :]
        return value[1:end] if not rest or rest.startswith(":") else value
    if value.count(":") == 1:
        host, port = value.split(":")
        try:
            int(port)
        except ValueError:
            return value
        return host
    return value


class TrustedProxies:
    """The peers whose `X-Forwarded-For` names the client (addresses, networks, names)."""

    def __init__(self, allowed: list[str] | str) -> None:
        self.everyone = allowed in ("*", ["*"])
        self.addresses: set[_IPAddress] = set()
        self.networks: set[_IPNetwork] = set()
        self.names: set[str] = set()
        entries = allowed.split(",") if isinstance(allowed, str) else allowed
        for entry in (item.strip() for item in entries):
            try:
                if "/" in entry:
                    self.networks.add(ipaddress.ip_network(entry))
                else:
                    self.addresses.add(ipaddress.ip_address(entry))
            except ValueError:
                self.names.add(entry)  # not an address: a unix socket's name, say
        self._cached = functools.lru_cache(maxsize=4096)(self._trusts)

    def __contains__(self, host: str) -> bool:
        if self.everyone:
            return True
        if not host:
            return False
        return self._cached(host) if len(host) <= 253 else self._trusts(host)

    def _trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names
        return address in self.addresses or any(address in net for net in self.networks)

    def client(self, forwarded: str) -> str:
        """The client named by a trusted peer's `X-Forwarded-For` values ("" if none)."""
        hosts = [item.strip() for item in forwarded.split(",")]
        if not self.everyone:
            for value in reversed(hosts):
                host = _host(value)
                if host not in self:
                    return host
        return _host(hosts[0])
