"""An interpreter without Cryo fails a range saying Cryo is missing, not blaming the RPC pool."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

import trace_platform
from trace_platform.adapters.extract import cryo_runner
from trace_platform.adapters.extract.cryo_runner import CRYO_NOT_INSTALLED, CryoRequest, CryoRunner
from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.planner import BlockRange

# The system interpreter: same Python, none of the venv's packages (so no Cryo).
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
SRC = str(Path(trace_platform.__file__).resolve().parents[1])


@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python3 without the venv's packages")
async def test_missing_cryo_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SYSTEM_PYTHON is not None
    monkeypatch.setenv("PYTHONPATH", SRC)  # the child module itself imports only the stdlib
    monkeypatch.setattr(cryo_runner.sys, "executable", SYSTEM_PYTHON)
    runner = CryoRunner(tmp_path / "staging", timeout_seconds=60)
    req = CryoRequest(str(uuid.uuid4()), 1, "blocks", BlockRange(0, 10), rpc_url="http://127.0.0.1:9")
    with pytest.raises(FailedPrecondition) as info:
        await runner.run(req)
    assert info.value.reason == CRYO_NOT_INSTALLED
    assert "cryo is not installed" in str(info.value) and "RPC" not in str(info.value)
