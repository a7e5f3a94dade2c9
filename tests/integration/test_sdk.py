"""`trace_platform.connect` against a served platform (real servers, real PostgreSQL):
the sync and async forms reach every service, results are dataclasses, page iterators
walk every page, and errors are the typed ones with their reason codes."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import trace_platform
from tests.api_support import make_user
from trace_platform.app import RunningPlatform
from trace_platform.core.config import Settings
from trace_platform.core.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from trace_platform.lite import credentials

HOOK = "https://hooks.example.com/trace"


async def test_the_async_client_pages_and_raises_typed_errors(platform: RunningPlatform, settings: Settings) -> None:
    user = await make_user(platform.pool, settings, "editor")
    async with await trace_platform.aconnect(platform.addr, token=user.token) as trace:
        created = [await trace.alerts.create(f"alert-{i}", [HOOK]) for i in range(5)]
        assert dataclasses.is_dataclass(created[0])
        first = await trace.alerts.list(page_size=2)
        assert len(first.items) == 2 and first.next_page_token
        walked = [a.alert_id async for a in trace.alerts.iterate(page_size=2)]
        assert walked == [a.alert_id for a in created]  # every page, each item once, in order
        with pytest.raises(NotFound) as missing:
            await trace.datasets.get("no-such-dataset")
        assert missing.value.reason and missing.value.reason.endswith("NOT_FOUND")
        with pytest.raises(InvalidArgument) as bad:
            await trace.alerts.list(page_token="not-a-token")
        assert bad.value.reason == "PAGE_TOKEN_INVALID"


async def test_the_sync_client_is_the_same_api(platform: RunningPlatform, settings: Settings) -> None:
    viewer = await make_user(platform.pool, settings, "viewer")
    editor = await make_user(platform.pool, settings, "editor", org_id=viewer.org_id)

    def as_a_script() -> None:
        with trace_platform.connect(platform.addr, token=editor.token) as trace:
            alert = trace.alerts.create("from-sync", [HOOK])
            assert trace.alerts.get(alert.alert_id).name == "from-sync"
            assert [a.name for a in trace.alerts.iterate(page_size=1)] == ["from-sync"]
        with trace_platform.connect(platform.addr, token=viewer.token) as trace:
            assert trace.alerts.get(alert.alert_id).alert_id == alert.alert_id
            with pytest.raises(PermissionDenied) as denied:
                trace.alerts.create("viewer-cannot", [HOOK])
            assert denied.value.reason == "ROLE_REQUIRED"

    await asyncio.to_thread(as_a_script)


async def test_connect_finds_lite_in_the_data_directory(
    platform: RunningPlatform, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await make_user(platform.pool, settings, "admin")
    data_dir = settings.data_dir / "lite-home"
    credentials.save(data_dir, credentials.LiteCredentials(platform.addr, "a", "w", "s", user.token))
    for var in ("TRACE_ADDR", "TRACE_USER_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRACE_DATA_DIR", str(data_dir))
    async with await trace_platform.aconnect() as trace:
        assert (await trace.alerts.list()).items == []
    monkeypatch.setenv("TRACE_DATA_DIR", str(settings.data_dir / "nowhere"))
    with pytest.raises(Unauthenticated) as err:
        await trace_platform.aconnect()
    assert err.value.reason == "USER_TOKEN_MISSING"
