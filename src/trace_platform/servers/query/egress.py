"""The Query Service's own egress allowlist, checked before it starts (S1 in the
application, under the network's: the NetworkPolicy and, in tests/deploy/test_s1_netns,
nftables in a network namespace).

Invariant: with TRACE_QUERY_EGRESS_ALLOW set, the Query Service does not start while a
storage endpoint it would read from lies outside it. An IP endpoint must fall in one of
the CIDRs; a named endpoint must be listed by name (or under a listed ``.suffix``).
Names are never resolved here: a DNS answer can change after the check, and addresses
are what the network layer enforces. Empty (Lite's default) means no check."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from trace_platform.adapters.objectstore.factory import s3_configured
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition

SETTING = "TRACE_QUERY_EGRESS_ALLOW"


def storage_endpoints(settings: Settings) -> list[tuple[str, str]]:
    """(variable, endpoint URL) of every object store the Query Service would reach."""
    store = settings.object_store
    if store.s3_endpoint_url:
        return [("TRACE_S3_ENDPOINT_URL", store.s3_endpoint_url)]
    # An S3 store without an endpoint (keys, or IRSA's s3:// URIs) talks to AWS's regional
    # one: the same rule that builds the store, so no store escapes the check.
    if s3_configured(settings):
        return [("AWS_REGION", f"https://s3.{store.s3_region}.amazonaws.com")]
    return []


def allowed(host: str, allow: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(host == e.lower() or (e.startswith(".") and host.endswith(e.lower())) for e in allow)
    for entry in allow:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name entry: never matches an address
    return False


def check_query_egress(settings: Settings) -> None:
    """Raise QUERY_EGRESS_NOT_ALLOWED naming the variable whose endpoint is outside."""
    allow = settings.query.egress_allow
    if not allow:
        return
    for variable, url in storage_endpoints(settings):
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if not host or not allowed(host, allow):
            # The host only (a URL may carry credentials); it is configuration, not a secret.
            raise FailedPrecondition(
                "QUERY_EGRESS_NOT_ALLOWED",
                f"QUERY_EGRESS_NOT_ALLOWED: {variable} endpoint host {host or '(none)'!s} is outside {SETTING}",
                variable=variable,
            )
