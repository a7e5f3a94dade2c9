"""``trace lite up``: embedded defaults, every service on one address, in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import replace

import grpc

from trace_platform.adapters.objectstore.stores import make_private_dirs
from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import LITE_ORG_ID, Settings
from trace_platform.core.errors import TraceError
from trace_platform.core.user_tokens import issue_user_token
from trace_platform.lite import credentials
from trace_platform.lite.embedded_pg import EmbeddedPostgres
from trace_platform.servers.common.server import wait_for_shutdown_signal
from trace_platform.views.live_status import ProgressView, watch

log = logging.getLogger(__name__)
LITE_ORG_NAME = "lite"
LITE_USER = "lite-user"
LITE_WEBHOOK_NETWORKS = ("127.0.0.0/8", "::1/128")


async def run_lite(
    settings: Settings,
    on_ready: Callable[[RunningPlatform], None] | None = None,
    progress: ProgressView | None = None,
) -> None:
    """Run until SIGINT/SIGTERM. ``progress`` shows the chain_sync status (live on a terminal)."""
    embedded: EmbeddedPostgres | None = None
    # The data directory (credentials, objects, scratch) is the platform's alone: 0700.
    # Its parents keep their modes.
    make_private_dirs(settings.data_dir)
    os.chmod(settings.data_dir, 0o700)
    if not settings.database_url:
        embedded = EmbeddedPostgres(settings.data_dir)
        settings = replace(settings, database_url=embedded.start())
    creds = credentials.load(settings.data_dir) or credentials.LiteCredentials.fresh(settings.listen)
    settings = lite_settings(settings, creds)
    user_auth = settings.user_auth
    platform: RunningPlatform | None = None
    try:
        platform = await start_platform(settings, run_worker=True)
        assert settings.admin_token and settings.worker_token
        # The Lite org and its admin user: the user token left in the data directory is theirs.
        await IdentityRepository(platform.pool).ensure_member(LITE_ORG_ID, LITE_ORG_NAME, LITE_USER, "admin")
        user_token = ""
        if user_auth.hs256_secret:
            user_token = issue_user_token(
                user_auth.hs256_secret, issuer=user_auth.issuer, subject=LITE_USER, org_id=LITE_ORG_ID
            )
        credentials.save(
            settings.data_dir,
            credentials.LiteCredentials(
                platform.addr, settings.admin_token, settings.worker_token, creds.user_secret, user_token
            ),
        )
        if on_ready is not None:
            on_ready(platform)
        watcher = (
            asyncio.create_task(_watch_progress(platform.addr, settings.admin_token, progress)) if progress else None
        )
        try:
            await wait_for_shutdown_signal()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    finally:
        if platform is not None:
            await platform.stop()
        if embedded is not None:
            with contextlib.suppress(Exception):
                embedded.stop()


def lite_settings(settings: Settings, creds: credentials.LiteCredentials) -> Settings:
    """What Lite fills in: the tokens and user-token secret of its credentials file (unless
    configured), and the webhook policy of one developer's machine."""
    user_auth = settings.user_auth
    if not user_auth.hs256_secret and not user_auth.jwks_path:
        user_auth = replace(user_auth, hs256_secret=creds.user_secret)
    return replace(
        settings,
        admin_token=settings.admin_token or creds.admin_token,
        worker_token=settings.worker_token or creds.worker_token,
        user_auth=user_auth,
        # Plain http webhooks are allowed, and so is this machine's loopback (a receiver
        # under development) unless the operator named the networks.
        delivery=replace(
            settings.delivery,
            allow_http=True,
            allowed_networks=settings.delivery.allowed_networks or LITE_WEBHOOK_NETWORKS,
        ),
    )


async def _watch_progress(addr: str, admin_token: str, view: ProgressView, interval: float = 1.0) -> None:
    """The live progress view of every chain_sync job, until cancelled (a failed poll is
    skipped: the view keeps what it showed)."""
    async with grpc.aio.insecure_channel(addr) as channel:
        client = ChainSyncClient(channel, admin_token=admin_token)
        with view:
            await watch(
                lambda: client.status(LITE_ORG_ID), view, interval, on_error=lambda e: isinstance(e, TraceError)
            )
