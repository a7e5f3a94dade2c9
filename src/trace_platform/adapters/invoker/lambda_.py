"""The cluster invoker: a synchronous (``RequestResponse``) call to the platform-managed
Lambda UDF runner, with the reference's invocation payload.

The runner (VPC-attached, near-zero IAM role) fetches the bundle from the pre-signed
``bundle_url``, verifies it and runs it; it holds only the capability token. Lambda's
own retries are off (botocore ``max_attempts: 0``): a failed call is reported once and
the Dispatcher decides whether the attempt is retried.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from trace_platform.adapters.invoker import base
from trace_platform.adapters.invoker.base import Invocation, InvocationResult
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from trace_platform.core.storage_paths import is_under

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's own synchronous response cap


def lambda_payload(invocation: Invocation, task_endpoint: str, deadline_unix: float) -> dict[str, Any]:
    """The reference's ``UdfInvocationPayload`` (plus the work and the task endpoint)."""
    return {
        "task_id": invocation.task_id,
        "attempt": invocation.attempt,
        "lease_token": invocation.lease_token,
        "lease_expires_at": invocation.lease_expires_at.isoformat(),
        "capability_token": invocation.capability_token,
        "bundle_url": invocation.bundle_url,
        "bundle_sha256": invocation.bundle_sha256,
        "task_endpoint": task_endpoint,
        "work_payload": invocation.event(deadline_unix),
    }


class LambdaInvoker:
    def __init__(
        self,
        function_name: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_seconds: float = 60.0,
        task_endpoint: str = "",
        stderr_limit_bytes: int = 64 * 1024,
        presign_bundle: Callable[[str, int], str] | None = None,
    ) -> None:
        self.function_name = function_name
        # s3:// bundle URLs (what a DAG resolves from the bundle store) become pre-signed
        # GETs here: the runner holds no store credentials.
        self._presign = presign_bundle
        self._region, self._endpoint = region, endpoint_url
        self._key, self._secret = access_key_id, secret_access_key
        self._timeout = timeout_seconds
        self._task_endpoint = task_endpoint
        self._stderr_limit = stderr_limit_bytes
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @staticmethod
    def from_settings(settings: Settings) -> LambdaInvoker:
        inv, store = settings.invoker, settings.object_store
        return LambdaInvoker(
            inv.lambda_function_name,
            region=store.s3_region,
            endpoint_url=inv.lambda_endpoint_url,
            access_key_id=store.s3_access_key_id,
            secret_access_key=store.s3_secret_access_key,
            timeout_seconds=inv.limits.timeout_seconds,
            task_endpoint=inv.task_endpoint,
            stderr_limit_bytes=inv.limits.stderr_limit_bytes,
            presign_bundle=bundle_presigner(settings),
        )

    async def _lambda(self) -> Any:
        if self._client is None:
            config = AioConfig(
                retries={"max_attempts": 0},  # the Dispatcher owns retries
                connect_timeout=5,
                read_timeout=self._timeout + 10,
            )
            self._client = await self._stack.enter_async_context(
                get_session().create_client(
                    "lambda",
                    region_name=self._region,
                    endpoint_url=self._endpoint,
                    aws_access_key_id=self._key,
                    aws_secret_access_key=self._secret,
                    config=config,
                )
            )
        return self._client

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        lease_left = (invocation.lease_expires_at - datetime.now(UTC)).total_seconds()
        if lease_left <= 0:
            raise FailedPrecondition("LEASE_EXPIRED", "the attempt's lease has already expired")
        deadline = time.time() + min(self._timeout, lease_left)
        if invocation.bundle_url.startswith("s3://"):
            if self._presign is None:
                raise InvalidArgument("BUNDLE_URL_UNSUPPORTED", "s3:// bundle URLs need the bundle store on S3")
            # Valid until the invocation's deadline, and a minute for the runner's start.
            seconds = math.ceil(min(self._timeout, lease_left)) + 60
            invocation = replace(invocation, bundle_url=self._presign(invocation.bundle_url, seconds))
        payload = lambda_payload(invocation, self._task_endpoint, deadline)
        client = await self._lambda()
        started = time.monotonic()
        try:
            resp = await client.invoke(
                FunctionName=self.function_name,
                InvocationType="RequestResponse",
                LogType="Tail",
                Payload=json.dumps(payload).encode(),
            )
            async with resp["Payload"] as stream:
                body: bytes = await stream.read(MAX_PAYLOAD_BYTES + 1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise NotFound("LAMBDA_FUNCTION_NOT_FOUND", "the UDF runner function does not exist") from None
            if code in ("TooManyRequestsException", "ThrottlingException"):
                raise Unavailable("LAMBDA_THROTTLED", "the UDF runner is throttled") from None
            raise Unavailable("LAMBDA_INVOKE_FAILED", f"lambda invoke failed ({code or 'error'})") from None
        except BotoCoreError:
            raise Unavailable("LAMBDA_UNREACHABLE", "the Lambda API could not be reached") from None
        return self._result(resp, body, time.monotonic() - started)

    def _result(self, resp: dict[str, Any], body: bytes, duration: float) -> InvocationResult:
        logs = ""
        if resp.get("LogResult"):
            with contextlib.suppress(ValueError):
                logs = base64.b64decode(resp["LogResult"]).decode("utf-8", "replace")
        logs = logs[-self._stderr_limit :]
        text = body[:MAX_PAYLOAD_BYTES].decode("utf-8", "replace")
        if resp.get("FunctionError"):
            timed_out = "Task timed out" in text or "Sandbox.Timedout" in text
            reason = base.UDF_TIMEOUT if timed_out else base.UDF_FUNCTION_ERROR
            return InvocationResult(1, "", (logs + text)[-self._stderr_limit :], timed_out, reason, "lambda", duration)
        if len(body) > MAX_PAYLOAD_BYTES:
            return InvocationResult(0, "", logs, False, base.UDF_RESULT_TOO_LARGE, "lambda", duration)
        try:
            json.loads(text)
        except ValueError:
            return InvocationResult(0, "", logs, False, base.UDF_RESULT_INVALID, "lambda", duration)
        return InvocationResult(0, text, logs, False, base.UDF_OK, "lambda", duration)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def bundle_presigner(settings: Settings) -> Callable[[str, int], str] | None:
    """Pre-signs GETs of bundles under the S3 bundle store (None: bundles are not on S3);
    a URL outside it is refused, never signed."""
    from trace_platform.adapters.objectstore.bundle_objects import S3BundleObjects, bundles_uri

    prefix = bundles_uri(settings) + "/"
    if not prefix.startswith("s3://"):
        return None
    store = S3BundleObjects(settings.object_store)

    def presign(url: str, seconds: int) -> str:
        if not is_under(url, prefix) or url.endswith("/"):
            raise PermissionDenied("BUNDLE_URL_FORBIDDEN", "bundle URL is outside the bundle store")
        return store.runnable_url(url, seconds)

    return presign
