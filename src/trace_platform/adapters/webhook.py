"""Outbound webhook POSTs (aiohttp): the only place the platform sends to the outside.

Redirects are not followed, the response body is read up to a small cap and dropped,
and errors are reported by type only: an exception's text can carry the URL, and a
webhook URL may embed a secret.

Destinations are checked deny-by-default (server-side request forgery): a webhook may
reach only globally routable unicast addresses. Loopback, private, link-local (cloud
metadata at 169.254.169.254), shared, reserved and multicast addresses are refused
unless an operator lists their network in ``allowed_networks``. The check runs on the
addresses the connection will actually use (a resolver wrapper, so a name cannot
resolve to one address when checked and another when used), and a name with any
forbidden address is refused whole.

The host is checked in the form aiohttp dials: the URL is parsed once by yarl (as the
client would, with IDNA/NFKC), that same parsed URL is what is sent, and its host must
equal the host ``core.webhook_hosts`` accepts from the text as written. So
``127。0。0。1``, circled or fullwidth digits, ``2130706433``, ``0177.0.0.1``, ``127.1``,
zone ids and userinfo are refused before any connection (an IP literal is dialled
without the resolver, so the policy is applied to it here). Plain http is refused
unless ``allow_http`` (Lite, or an explicit setting): a destination is https.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from trace_platform.core.errors import InvalidArgument
from trace_platform.core.webhook_hosts import DESTINATION_FORBIDDEN, webhook_host

__all__ = ["DESTINATION_FORBIDDEN", "DestinationPolicy", "ForbiddenDestination", "SendResult", "WebhookSender"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SendResult:
    ok: bool
    status: int | None
    error: str
    permanent: bool = False  # retrying cannot help (the destination is refused)


class ForbiddenDestination(OSError):
    pass


@dataclass(frozen=True)
class DestinationPolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, networks: Sequence[str]) -> DestinationPolicy:
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()))

    def permits(self, address: str) -> bool:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed_networks):
            return True
        if isinstance(ip, ipaddress.IPv6Address):
            # An IPv6 form that carries an IPv4 address (compatible, 6to4, NAT64, Teredo,
            # translated) may be routed to it: it is permitted only if that address is.
            embedded = _embedded_ipv4(ip)
            if embedded and not all(self.permits(str(v4)) for v4 in embedded):
                return False
            if ip in _SITE_LOCAL:
                return False
        return ip.is_global and not ip.is_multicast


_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")  # deprecated, still routed by some stacks
_EMBEDDING = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _EMBEDDING) and int(ip) > 1:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


class _CheckedResolver(AbstractResolver):
    """Resolves through ``inner`` (aiohttp's default) and refuses a name with any
    forbidden address: the connection uses only the addresses returned here."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or not all(self._policy.permits(r["host"]) for r in results):
            raise ForbiddenDestination(DESTINATION_FORBIDDEN)
        return results

    async def close(self) -> None:
        await self._inner.close()


class WebhookSender:
    def __init__(
        self,
        timeout_seconds: float,
        max_response_bytes: int,
        policy: DestinationPolicy | None = None,
        *,
        allow_http: bool = False,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_response = max_response_bytes
        self._policy = policy or DestinationPolicy()
        self._schemes = ("https", "http") if allow_http else ("https",)
        self._resolver = resolver  # the name service under the policy check (default: getaddrinfo)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=_CheckedResolver(self._policy, self._resolver))
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False, connector=connector)
        return self._session

    async def post_json(self, url: str, body: bytes, idempotency_key: str) -> SendResult:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "User-Agent": "trace-delivery/1",
        }
        try:
            target = self._target(url)
        except ValueError:
            return SendResult(False, None, "InvalidURL", permanent=True)
        if target is None:
            return SendResult(False, None, DESTINATION_FORBIDDEN, permanent=True)
        try:
            async with self._client().post(target, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(self._max_response)
                ok = 200 <= resp.status < 300
                return SendResult(ok, resp.status, "" if ok else f"HTTP {resp.status}")
        except TimeoutError:
            return SendResult(False, None, "timeout")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenDestination):
                return SendResult(False, None, DESTINATION_FORBIDDEN, permanent=True)
            return SendResult(False, None, type(exc).__name__)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return SendResult(False, None, type(exc).__name__)

    def _target(self, url: str) -> URL | None:
        """The parsed URL to send to, or None when the destination is refused. Raises
        ValueError for a URL that does not parse."""
        try:
            host = webhook_host(url)
        except InvalidArgument:
            return None
        target = URL(url)  # parsed as aiohttp would; this object is what is sent
        dialled = target.raw_host or ""
        if target.scheme not in self._schemes or target.user is not None or not host.same_as(dialled):
            return None
        if host.address is not None and not self._policy.permits(str(host.address)):
            return None  # aiohttp connects to an IP literal without asking the resolver
        return target

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector close its transports before the loop moves on.
            await asyncio.sleep(0)
