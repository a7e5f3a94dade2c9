"""A bundle uploaded through the served platform's public API (the api role of Lite)
runs as an alert_evaluate task from the URL the bundle repository resolves it to."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.alert_udfs import PYTHON_ALERTS
from tests.api_support import make_user
from tests.bundle_helpers import signed_zip
from tests.datasets import write_dataset
from tests.integration.conftest import ORG
from tests.integration.test_alert_evaluate import EXPECTED_KEYS, TRANSFERS, run_alert_task
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.bundle_repository import BundleRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.api.bundles import BundlesClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings


@pytest.fixture
def signing_key(settings: Settings) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    keys = settings.data_dir / "bundle_keys"
    keys.mkdir(parents=True, exist_ok=True)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (keys / "test.pub").write_bytes(pem)
    return key


@pytest.fixture
async def served(settings: Settings, signing_key: Ed25519PrivateKey) -> AsyncIterator[RunningPlatform]:
    slow_udf = replace(
        settings, invoker=replace(settings.invoker, limits=replace(settings.invoker.limits, timeout_seconds=30.0))
    )
    running = await start_platform(slow_udf, migrate=False, run_worker=True)
    yield running
    await running.stop(grace=0.5)


async def test_an_uploaded_bundle_runs_from_its_repository_url(
    served: RunningPlatform, settings: Settings, signing_key: Ed25519PrivateKey, db: asyncpg.Connection, tmp_path: Path
) -> None:
    user = await make_user(served.pool, settings, "editor", org_id=ORG)
    archive = signed_zip(tmp_path / "alerts.zip", signing_key, "python", "handler.main", {"handler.py": PYTHON_ALERTS})
    async with grpc.aio.insecure_channel(served.addr) as ch:
        bundle = await BundlesClient(ch, token=user.token).upload(archive)
        assert bundle.ready
        record = await BundleRepository(served.pool).get(ORG, bundle.id)
        assert record is not None and record.finalized and record.url
        store = LocalObjectStore([settings.data_dir / "objects"])
        ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(TRANSFERS)])
        client = DispatcherClient(ch, admin_token=settings.admin_token)
        task_id = await run_alert_task(client, ds, record.url, bundle_sha256=record.sha256)
    [publish] = await db.fetch("SELECT batch_uri FROM buffered_publishes WHERE task_id = $1", uuid.UUID(task_id))
    text = await asyncio.to_thread(Path(publish["batch_uri"].removeprefix("file://")).read_text)
    assert {json.loads(line)["dedupe_key"] for line in text.splitlines()} == EXPECTED_KEYS
