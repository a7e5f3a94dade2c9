"""The public user API (proto package ``trace.api.v1``): datasets, DAGs, bundles and
alerts, each behind the user authenticator and scoped to the caller's org."""
