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
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

DESTINATION_FORBIDDEN = "DESTINATION_FORBIDDEN"

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
        return ip.is_global and not ip.is_multicast


class _CheckedResolver(AbstractResolver):
    """Resolves like aiohttp's default and refuses a name with any forbidden address."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or not all(self._policy.permits(r["host"]) for r in results):
            raise ForbiddenDestination(DESTINATION_FORBIDDEN)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _literal_address(url: str) -> str | None:
    """The host of ``url`` when it is an IP literal (aiohttp connects to those unresolved)."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    return host


class WebhookSender:
    def __init__(
        self, timeout_seconds: float, max_response_bytes: int, policy: DestinationPolicy | None = None
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_response = max_response_bytes
        self._policy = policy or DestinationPolicy()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=_CheckedResolver(self._policy))
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False, connector=connector)
        return self._session

    async def post_json(self, url: str, body: bytes, idempotency_key: str) -> SendResult:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "User-Agent": "trace-delivery/1",
        }
        try:
            literal = _literal_address(url)
        except ValueError:
            return SendResult(False, None, "InvalidURL", permanent=True)
        if literal is not None and not self._policy.permits(literal):
            return SendResult(False, None, DESTINATION_FORBIDDEN, permanent=True)
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as resp:
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector close its transports before the loop moves on.
            await asyncio.sleep(0)
