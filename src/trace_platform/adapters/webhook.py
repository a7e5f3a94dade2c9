"""Outbound webhook POSTs (aiohttp): the only place the platform sends to the outside.

Redirects are not followed, the response body is read up to a small cap and dropped,
and errors are reported by type only: an exception's text can carry the URL, and a
webhook URL may embed a secret.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class SendResult:
    ok: bool
    status: int | None
    error: str


class WebhookSender:
    def __init__(self, timeout_seconds: float, max_response_bytes: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_response = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        return self._session

    async def post_json(self, url: str, body: bytes, idempotency_key: str) -> SendResult:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "User-Agent": "trace-delivery/1",
        }
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(self._max_response)
                ok = 200 <= resp.status < 300
                return SendResult(ok, resp.status, "" if ok else f"HTTP {resp.status}")
        except TimeoutError:
            return SendResult(False, None, "timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return SendResult(False, None, type(exc).__name__)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector close its transports before the loop moves on.
            await asyncio.sleep(0)
