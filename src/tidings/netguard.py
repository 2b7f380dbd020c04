"""Where Tidings may connect when it calls a URL someone gave it: an SDK app's URL, a function's
step URL (and any other outbound call to a user-supplied URL).

Under ``tidings serve`` anyone with a signing key or an API key chooses those URLs, and the
server calls them from inside the operator's network: without a guard, ``POST /v1/apps/sync``
would make it ``PUT`` to the cloud metadata service (169.254.169.254) or to a database admin
page on 10.0.0.5. So a ``Policy`` outside dev refuses every address that is not publicly
routable — loopback, private, link-local, multicast, unspecified, reserved, and their IPv6
forms, including IPv4 addresses inside IPv6 (``::ffff:10.0.0.1``, NAT64, 6to4) — unless the
operator allows it (``--allow-app-host CIDR|host``). ``tidings dev`` is a local tool whose apps
run on the same machine or a private network: its policy is open.

Checking the name when the URL arrives is not enough: a name can resolve to a public address
when it is checked and to a private one when it is called (DNS rebinding). So the check is made
where the connection is made: the guard resolves the name itself, keeps only allowed addresses
and connects to one of those addresses, never to the name again; then it checks the peer of the
socket it got. ``Policy.connect`` does that for asyncio protocols; ``transport`` gives httpx the
same through an httpcore network backend. Every client of user-supplied URLs goes through one
of them. (Through an HTTP proxy from the environment the proxy connects, not Tidings: only the
name check applies, and the proxy should refuse internal addresses itself.)

Name resolution goes through the module-level ``resolve``: tests replace it to stub names
without touching DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl as _ssl
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx

from tidings.errors import ConfigError

if TYPE_CHECKING:
    from tidings.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
P = TypeVar("P", bound=asyncio.BaseProtocol)

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
ALLOW_HINT = "allow it with --allow-app-host (or TIDINGS_ALLOW_APP_HOSTS)"


def proxied() -> bool:
    """Whether the environment sets an HTTP proxy (``HTTP_PROXY`` and the like)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


class Refused(OSError):
    """A connection the policy does not allow. An ``OSError``, so that every client's existing
    handling of a failed connect handles it too."""


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host``, in the resolver's order (an IP literal is its own address)."""
    if _literal(host) is not None:
        return [host.strip("[]")]
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _embedded(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.sixtofour


def _category(ip: IPAddress) -> str | None:
    """What kind of address that is not publicly routable ``ip`` is; None when it is."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (where cloud metadata services live)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "non-public"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Which addresses outbound calls to user-supplied URLs may connect to.

    ``guarded=False`` (dev) allows everything. Otherwise publicly routable addresses are
    allowed, and others only when inside one of ``networks``, or when the URL's host is one of
    ``names`` or ends with one of ``suffixes`` (``*.svc.cluster.local``): the operator trusts
    such a name whatever it resolves to.
    """

    guarded: bool = True
    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)
    suffixes: tuple[str, ...] = ()

    @classmethod
    def open(cls) -> Policy:
        return cls(guarded=False)

    @classmethod
    def build(cls, allow: Iterable[str] = ()) -> Policy:
        """A guarded policy; ``allow`` holds CIDRs, addresses, host names and ``*.suffix``es."""
        networks: list[IPNetwork] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in allow:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry.startswith("*."):
                suffixes.append(entry[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or ":" in entry or not all(
                    part and (part.replace("-", "").replace("_", "").isalnum())
                    for part in entry.split(".")):
                raise ConfigError(f"--allow-app-host {raw!r}: not a CIDR, an address, a host "
                                  "name or *.domain")
            names.add(entry)
        return cls(networks=tuple(networks), names=frozenset(names), suffixes=tuple(suffixes))

    @classmethod
    def for_mode(cls, dev: bool, allow: Iterable[str] = ()) -> Policy:
        return cls.open() if dev else cls.build(allow)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """Open in dev; under serve, guarded with the settings' ``allow_app_hosts``."""
        return cls.for_mode(settings.dev, settings.allow_app_hosts)

    # -- checks ------------------------------------------------------------------------------

    def allows_name(self, host: str) -> bool:
        """Whether ``host`` is trusted by name (or nothing is guarded)."""
        if not self.guarded:
            return True
        name = host.lower().rstrip(".")
        return name in self.names or any(name.endswith(s) for s in self.suffixes)

    def why_refused(self, address: str) -> str | None:
        """None when ``address`` (an IP address) may be connected to, else why not."""
        if not self.guarded:
            return None
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return f"{address!r} is not an IP address"
        inner = _embedded(ip)
        candidates = (ip,) if inner is None else (ip, inner)
        if any(c in net for c in candidates for net in self.networks):
            return None
        kind = _category(ip if inner is None else inner)
        if kind is None:
            return None
        article = "an" if kind[0] in "aeiou" else "a"
        return f"{address} is {article} {kind} address; {ALLOW_HINT}"

    def check(self, address: str) -> None:
        """Raise ``Refused`` unless ``address`` may be connected to."""
        reason = self.why_refused(address)
        if reason is not None:
            raise Refused(reason)

    async def addresses(self, host: str, port: int) -> list[str]:
        """What to connect to for ``host``: the allowed addresses it resolves to (``Refused``
        when there are none), or ``host`` itself when it is trusted by name."""
        if self.allows_name(host):
            return [host]
        found = await resolve(host, port)
        allowed = [a for a in found if self.why_refused(a) is None]
        if not allowed:
            reason = self.why_refused(found[0]) if found else "no address"
            raise Refused(f"{host}: {reason}" if _literal(host) is None else str(reason))
        return allowed

    async def vet_url(self, url: str) -> str | None:
        """Why ``url`` must not be called (its host resolves only to refused addresses), or
        None. A name that does not resolve now is let through: the connect-time check applies
        when it is called."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            await self.addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
        except Refused as exc:
            return str(exc)
        except (OSError, UnicodeError, ValueError):
            return None
        return None

    # -- connecting ----------------------------------------------------------------------------

    async def connect(self, factory: Callable[[], P], host: str, port: int, *,
                      ssl: _ssl.SSLContext | None = None) -> tuple[asyncio.Transport, P]:
        """``loop.create_connection`` to ``host`` through the policy: to an allowed address
        it resolved (the first that answers), TLS checked against ``host``."""
        loop = asyncio.get_running_loop()
        hostname = host if ssl is not None else None
        if self.allows_name(host):
            return await loop.create_connection(factory, host, port, ssl=ssl,
                                                server_hostname=hostname)
        failure: OSError | None = None
        for address in await self.addresses(host, port):
            try:
                transport, protocol = await loop.create_connection(
                    factory, address, port, ssl=ssl, server_hostname=hostname)
            except OSError as exc:
                failure = exc
                continue
            peer = transport.get_extra_info("peername")
            reason = self.why_refused(str(peer[0])) if peer else "the peer is unknown"
            if reason is not None:
                transport.close()
                raise Refused(reason)
            return transport, protocol
        assert failure is not None
        raise failure


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only where ``policy`` allows (as
    ``Policy.connect`` does). Refusals are ``httpcore.ConnectError``s, so httpx raises
    ``httpx.ConnectError`` for them."""

    def __init__(self, policy: Policy, inner: httpcore.AsyncNetworkBackend | None = None
                 ) -> None:
        self._policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        policy = self._policy
        if policy.allows_name(host):
            return await self._inner.connect_tcp(host, port, timeout, local_address,
                                                 socket_options)
        try:
            addresses = await policy.addresses(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(address, port, timeout, local_address,
                                                       socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            peer = stream.get_extra_info("server_addr")
            reason = policy.why_refused(str(peer[0])) if peer else "the peer is unknown"
            if reason is not None:
                await stream.aclose()
                raise httpcore.ConnectError(reason)
            return stream
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable from user-supplied URLs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        # httpx takes no network backend: its pool is rebuilt with ours (httpx's defaults).
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                              keepalive_expiry=5.0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy))


def transport(policy: Policy) -> httpx.AsyncBaseTransport | None:
    """An httpx transport that connects only where ``policy`` allows; None (httpx's own) when
    the policy is open, or when the environment sets a proxy: httpx then connects through it
    (given a transport it would ignore the proxy), and only the name check applies."""
    return _GuardedTransport(policy) if policy.guarded and not proxied() else None
