"""The Lambda invoker against moto's server mode (its Lambda accepts functions and, with
docker off, answers invocations by echoing the payload or with queued results), and
against ``ScriptedLambdaEndpoint``, a test double for what moto cannot do: function
errors, timeouts, throttling, a missing function and 5xx (to show Lambda-side retries
are off)."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from tests.moto_server import moto_server
from tests.udf_fixtures import invocation
from trace_platform.adapters.invoker import base
from trace_platform.adapters.invoker.lambda_ import LambdaInvoker
from trace_platform.core.errors import NotFound, Unavailable

FUNCTION = "trace-udf-runner"


def _post(url: str, body: dict[str, object]) -> None:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status in (200, 201)


@pytest.fixture(scope="module")
def moto_lambda() -> Iterator[str]:
    with moto_server() as endpoint:
        _post(f"{endpoint}/moto-api/config", {"lambda": {"use_docker": False}})
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
        iam = boto3.client("iam", endpoint_url=endpoint, **creds)
        role = iam.create_role(RoleName="udf-runner", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as zf:
            zf.writestr("runner.py", "def handler(event, context):\n    return event\n")
        boto3.client("lambda", endpoint_url=endpoint, **creds).create_function(
            FunctionName=FUNCTION,
            Runtime="python3.11",
            Role=role,
            Handler="runner.handler",
            Code={"ZipFile": code.getvalue()},
        )
        yield endpoint


def invoker(endpoint: str, function: str = FUNCTION) -> LambdaInvoker:
    return LambdaInvoker(
        function,
        endpoint_url=endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        timeout_seconds=5,
        task_endpoint="dispatcher.internal:50051",
    )


async def test_request_response_payload_through_moto(moto_lambda: str) -> None:
    inv = invocation("https://bundles.example/presigned?sig=x", inputs={"rows": 3})
    lam = invoker(moto_lambda)
    try:
        res = await lam.invoke(inv)
    finally:
        await lam.close()
    assert res.ok and res.runtime == "lambda"
    echoed = json.loads(res.result_json)  # moto's Lambda without docker answers with the request payload
    assert echoed["task_id"] == inv.task_id and echoed["lease_token"] == inv.lease_token
    assert echoed["capability_token"] == inv.capability_token and echoed["bundle_url"] == inv.bundle_url
    assert echoed["task_endpoint"] == "dispatcher.internal:50051"
    assert echoed["work_payload"]["inputs"] == {"rows": 3} and "capability_token" not in echoed["work_payload"]


async def test_non_json_result_through_moto(moto_lambda: str) -> None:
    _post(f"{moto_lambda}/moto-api/static/lambda-simple/response", {"results": ["not json"], "region": "us-east-1"})
    lam = invoker(moto_lambda)
    try:
        assert (await lam.invoke(invocation("https://b/x"))).error_reason == base.UDF_RESULT_INVALID
    finally:
        await lam.close()


class ScriptedLambdaEndpoint:
    """Test double of the Lambda Invoke API: answers each request from a script and
    records what it received."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.script = script
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append((self.path, dict(self.headers), body))
                status, headers, reply = outer.script.pop(0) if outer.script else (500, {}, b"{}")
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedLambdaEndpoint]:
    double = ScriptedLambdaEndpoint([])
    yield double
    double.close()


async def test_lambda_side_retries_are_off(scripted: ScriptedLambdaEndpoint) -> None:
    error = json.dumps({"Type": "Service", "message": "boom"}).encode()
    throttle = json.dumps({"Type": "User", "message": "Rate exceeded"}).encode()
    scripted.script += [
        (500, {"x-amzn-ErrorType": "ServiceException"}, error),
        (429, {"x-amzn-ErrorType": "TooManyRequestsException"}, throttle),
        (404, {"x-amzn-ErrorType": "ResourceNotFoundException"}, b'{"Type": "User", "message": "no function"}'),
    ]
    lam = invoker(scripted.url)
    try:
        with pytest.raises(Unavailable) as first:
            await lam.invoke(invocation("https://b/x"))
        assert first.value.reason == "LAMBDA_INVOKE_FAILED" and len(scripted.requests) == 1
        with pytest.raises(Unavailable) as second:
            await lam.invoke(invocation("https://b/x"))
        assert second.value.reason == "LAMBDA_THROTTLED" and len(scripted.requests) == 2
        with pytest.raises(NotFound) as third:  # moto's docker-less Lambda never checks the function exists
            await lam.invoke(invocation("https://b/x"))
        assert third.value.reason == "LAMBDA_FUNCTION_NOT_FOUND" and len(scripted.requests) == 3
    finally:
        await lam.close()
    path, headers, _ = scripted.requests[0]
    assert path == f"/2015-03-31/functions/{FUNCTION}/invocations"
    assert headers.get("X-Amz-Invocation-Type") == "RequestResponse"


async def test_function_error_and_timeout_are_reported(scripted: ScriptedLambdaEndpoint) -> None:
    logs = base64.b64encode(b"START RequestId\nTraceback: ValueError\nEND").decode()
    timeout = json.dumps({"errorMessage": "2026-11-29T15:00:00Z Task timed out after 5.00 seconds"}).encode()
    crash = json.dumps({"errorMessage": "bad row", "errorType": "ValueError"}).encode()
    scripted.script += [
        (200, {"X-Amz-Function-Error": "Unhandled", "X-Amz-Log-Result": logs}, timeout),
        (200, {"X-Amz-Function-Error": "Unhandled", "X-Amz-Log-Result": logs}, crash),
    ]
    lam = invoker(scripted.url)
    try:
        timed = await lam.invoke(invocation("https://b/x"))
        failed = await lam.invoke(invocation("https://b/x"))
    finally:
        await lam.close()
    assert timed.timed_out and timed.error_reason == base.UDF_TIMEOUT
    assert not failed.timed_out and failed.error_reason == base.UDF_FUNCTION_ERROR
    assert "Traceback: ValueError" in failed.stderr_tail and "bad row" in failed.stderr_tail
    assert len(scripted.requests) == 2


async def test_lambda_backend_is_chosen_by_settings(moto_lambda: str, tmp_path: Path) -> None:
    """TRACE_INVOKER_BACKEND=lambda (as values-eks.yaml sets it) builds this invoker, on
    the object store's region and credentials, and it answers through moto."""
    from trace_platform.core.config import settings_from_env
    from trace_platform.servers.invoker.app import build_runtime_invoker

    env = {
        "TRACE_DATA_DIR": str(tmp_path),
        "TRACE_INVOKER_BACKEND": "lambda",
        "TRACE_INVOKER_LAMBDA_FUNCTION": FUNCTION,
        "TRACE_INVOKER_LAMBDA_ENDPOINT_URL": moto_lambda,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    lam = build_runtime_invoker(settings_from_env(env))
    assert isinstance(lam, LambdaInvoker) and lam.function_name == FUNCTION
    try:
        res = await lam.invoke(invocation("https://bundles.example/presigned?sig=y"))
    finally:
        await lam.close()
    assert res.ok and res.runtime == "lambda"
