"""``trace lite up``: embedded defaults, every service on one address, in the foreground."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace

from trace_platform.app import RunningPlatform, start_platform
from trace_platform.core.config import LITE_ORG_ID, Settings
from trace_platform.core.user_tokens import issue_user_token
from trace_platform.lite import credentials
from trace_platform.lite.embedded_pg import EmbeddedPostgres
from trace_platform.servers.common.server import wait_for_shutdown_signal

log = logging.getLogger(__name__)


async def run_lite(settings: Settings, on_ready: Callable[[RunningPlatform], None] | None = None) -> None:
    embedded: EmbeddedPostgres | None = None
    if not settings.database_url:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        settings = replace(settings, database_url=embedded.start())
    creds = credentials.load(settings.data_dir) or credentials.LiteCredentials.fresh(settings.listen)
    user_auth = settings.user_auth
    if not user_auth.hs256_secret and not user_auth.jwks_path:
        user_auth = replace(user_auth, hs256_secret=creds.user_secret)
    settings = replace(
        settings,
        admin_token=settings.admin_token or creds.admin_token,
        worker_token=settings.worker_token or creds.worker_token,
        user_auth=user_auth,
    )
    platform: RunningPlatform | None = None
    try:
        platform = await start_platform(settings, run_worker=True)
        assert settings.admin_token and settings.worker_token
        user_token = ""
        if user_auth.hs256_secret:
            user_token = issue_user_token(
                user_auth.hs256_secret, issuer=user_auth.issuer, subject="lite-user", org_id=LITE_ORG_ID
            )
        credentials.save(
            settings.data_dir,
            credentials.LiteCredentials(
                platform.addr, settings.admin_token, settings.worker_token, creds.user_secret, user_token
            ),
        )
        if on_ready is not None:
            on_ready(platform)
        await wait_for_shutdown_signal()
    finally:
        if platform is not None:
            await platform.stop()
        if embedded is not None:
            with contextlib.suppress(Exception):
                embedded.stop()
