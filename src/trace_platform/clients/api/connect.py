"""``trace_platform.connect``: one client for the whole public API.

    import trace_platform
    with trace_platform.connect() as trace:          # the running `trace lite up`
        for ds in trace.datasets.iterate():
            print(ds.name)
        rows = trace.query.query({"txs": "transactions"}, "SELECT count(*) FROM txs")

    async with trace_platform.aconnect("api.example:443", token=..., tls=ClientTls()) as trace:
        alert = await trace.alerts.get(alert_id)

Where no address or token is given, ``TRACE_ADDR``/``TRACE_USER_TOKEN`` are used, else
what `trace lite up` left in its data directory (``TRACE_DATA_DIR``, default
~/.trace/lite), as the CLI does. The cluster profile serves user queries from the query
role: ``query_addr`` names it when it is not the API's address.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import grpc

from trace_platform.clients.api.alerts import AlertsClient
from trace_platform.clients.api.bundles import BundlesClient
from trace_platform.clients.api.dags import DagsClient
from trace_platform.clients.api.datasets import DatasetsClient
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.api.sync import LoopThread, SyncService
from trace_platform.clients.channel import ClientTls, client_tls_from_env, open_channel
from trace_platform.core.defaults import DEFAULT_ADDR, default_data_dir
from trace_platform.core.errors import Unauthenticated


class AsyncTraceClient:
    """Every public service, each an async client over shared channels."""

    def __init__(self, channel: grpc.aio.Channel, token: str, query_channel: grpc.aio.Channel | None = None) -> None:
        self._channels = [channel] if query_channel is None else [channel, query_channel]
        self.datasets = DatasetsClient(channel, token=token)
        self.dags = DagsClient(channel, token=token)
        self.bundles = BundlesClient(channel, token=token)
        self.alerts = AlertsClient(channel, token=token)
        self.query = ApiQueryClient(query_channel or channel, token=token)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> AsyncTraceClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class TraceClient:
    """The same services, called synchronously (each on a private event loop thread)."""

    def __init__(self, runner: LoopThread, inner: AsyncTraceClient) -> None:
        self._runner = runner
        self._inner = inner
        self.datasets = SyncService(inner.datasets, runner)
        self.dags = SyncService(inner.dags, runner)
        self.bundles = SyncService(inner.bundles, runner)
        self.alerts = SyncService(inner.alerts, runner)
        self.query = SyncService(inner.query, runner)

    def close(self) -> None:
        self._runner.run(self._inner.close())
        self._runner.close()

    def __enter__(self) -> TraceClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def resolve(addr: str | None, token: str | None, data_dir: Path | None) -> tuple[str, str]:
    """The address and user token: given, else the environment, else Lite's data directory."""
    addr = addr or os.environ.get("TRACE_ADDR") or None
    token = token or os.environ.get("TRACE_USER_TOKEN") or None
    if addr is None or token is None:
        from trace_platform.lite import credentials

        directory = data_dir or Path(os.environ.get("TRACE_DATA_DIR") or default_data_dir())
        creds = credentials.load(directory)
        addr = addr or (creds.addr if creds is not None and creds.addr else DEFAULT_ADDR)
        token = token or (creds.user_token if creds is not None else None)
        if not token:
            raise Unauthenticated(
                "USER_TOKEN_MISSING", f"no token given, no TRACE_USER_TOKEN and no `trace lite up` in {directory}"
            )
    return addr, token


async def aconnect(
    addr: str | None = None,
    *,
    token: str | None = None,
    tls: ClientTls | None = None,
    query_addr: str | None = None,
    data_dir: Path | None = None,
) -> AsyncTraceClient:
    addr, token = resolve(addr, token, data_dir)
    tls = tls if tls is not None else client_tls_from_env()  # TRACE_TLS_CA_FILE, as the CLI
    query_channel = open_channel(query_addr, tls) if query_addr and query_addr != addr else None
    return AsyncTraceClient(open_channel(addr, tls), token, query_channel)


def connect(
    addr: str | None = None,
    *,
    token: str | None = None,
    tls: ClientTls | None = None,
    query_addr: str | None = None,
    data_dir: Path | None = None,
) -> TraceClient:
    runner = LoopThread()
    try:
        inner = runner.run(aconnect(addr, token=token, tls=tls, query_addr=query_addr, data_dir=data_dir))
    except BaseException:
        runner.close()
        raise
    return TraceClient(runner, inner)
