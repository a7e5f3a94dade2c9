"""`trace dag deploy|versions|activate|rollback` as a user runs them (the real `trace`
command in a subprocess) against a served platform: JSON and human output, the reason
code and field path of a refused document."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.api_support import ApiUser, make_user
from tests.dag_support import dag_yaml
from tests.integration.test_api_cli import Trace, cli_env
from tests.integration.test_api_dags import ready_bundle
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.app import RunningPlatform
from trace_platform.core.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, rpc_pools={"standard": "http://127.0.0.1:9"})


@pytest.fixture
async def user(platform: RunningPlatform, settings: Settings) -> ApiUser:
    user = await make_user(platform.pool, settings, "editor")
    await AlertRepository(platform.pool).create_definition(user.org_id, "large transfers", ["https://hooks.example/a"])
    return user


@pytest.fixture
def trace(platform: RunningPlatform, settings: Settings, user: ApiUser, tmp_path: Path) -> Trace:
    return Trace(cli_env(platform, settings, user, tmp_path))


async def test_deploy_versions_activate_rollback(
    trace: Trace, platform: RunningPlatform, user: ApiUser, tmp_path: Path
) -> None:
    bundle = await ready_bundle(platform.pool, user)
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(dag_yaml(bundle))
    two.write_text(dag_yaml(bundle, sql="SELECT 2 FROM dataset"))

    first = await trace.json("dag", "deploy", "-f", str(one))
    assert first["already_existed"] is False and first["version"]["number"] == 1
    again = await trace.json("dag", "deploy", "-f", str(one))
    assert again["already_existed"] is True and again["version"]["id"] == first["version"]["id"]
    human = await trace("dag", "deploy", "-f", str(two))
    assert "deployed transfers v2" in human.stdout and "trace dag activate transfers 2" in human.stdout

    versions = await trace.json("dag", "versions", "transfers")
    assert [v["number"] for v in versions] == [1, 2] and not any(v["active"] for v in versions)
    done = await trace.json("dag", "activate", "transfers", "1")
    assert done["changed"] is True and done["version"]["number"] == 1
    by_id = await trace("dag", "activate", "transfers", first["version"]["id"])
    assert "already active: transfers v1" in by_id.stdout
    out = await trace("dag", "activate", "transfers", "2")
    assert "active: transfers v2" in out.stdout
    back = await trace.json("dag", "rollback", "transfers")
    assert back["version"]["number"] == 1
    listed = (await trace("dag", "versions", "transfers")).stdout.splitlines()
    assert listed[0].endswith("(active)") and not listed[1].endswith("(active)")


async def test_refusals_print_the_reason_and_path(
    trace: Trace, platform: RunningPlatform, user: ApiUser, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        dag_yaml(await ready_bundle(platform.pool, user)).replace("upstream: transfers_ingest", "upstream: x")
    )
    failed = await trace("dag", "deploy", "-f", str(bad), ok=False)
    assert "UNKNOWN_UPSTREAM" in failed.stderr and "jobs[1].upstream" in failed.stderr
    assert failed.stderr.count("UNKNOWN_UPSTREAM") == 1
    missing = await trace("dag", "rollback", "nothing_here", ok=False)
    assert "DAG_NOT_FOUND" in missing.stderr
    nofile = await trace("dag", "deploy", "-f", str(tmp_path / "absent.yaml"), ok=False)
    assert "cannot read" in nofile.stderr
