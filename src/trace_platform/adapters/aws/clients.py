"""One way to open an aiobotocore client with the platform's AWS settings (the object
store's region and credentials; none given: the default chain, e.g. IRSA on EKS)."""

from __future__ import annotations

import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from trace_platform.core.config import ObjectStoreSettings


async def open_client(
    stack: contextlib.AsyncExitStack,
    service: str,
    aws: ObjectStoreSettings,
    endpoint_url: str | None,
    *,
    read_timeout: float = 30.0,
) -> Any:
    """A client for ``service`` whose close is on ``stack``."""
    config = AioConfig(
        connect_timeout=aws.connect_timeout_seconds, read_timeout=read_timeout, retries={"mode": "standard"}
    )
    return await stack.enter_async_context(
        get_session().create_client(
            service,
            region_name=aws.s3_region,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws.s3_access_key_id,
            aws_secret_access_key=aws.s3_secret_access_key,
            config=config,
        )
    )
