"""The chart renders offline for both value sets, every object validates against the
Kubernetes schemas, and every workload has what the cluster profile promises: probes,
requests and limits, its own ServiceAccount, a PDB, IRSA on EKS, and no secret values."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tests.deploy.chart import CHART, KUBERNETES_VERSIONS, schema_errors

Objects = list[dict[str, Any]]
Rendered = tuple[dict[str, Any], Objects]

ROLES = ("dispatcher", "query", "sink", "delivery", "invoker", "worker", "api")
# Names that hold secret values (paths to where secrets are mounted are fine).
SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|ACCESS_KEY|DATABASE_URL|RPC_POOL)(?!.*_(DIR|PATH|FILE)$)", re.I
)


def of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def enabled_roles(values: dict[str, Any]) -> list[str]:
    return [r for r in ROLES if values["roles"][r]["enabled"]]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered: Rendered, version: str) -> None:
    _, objects = rendered
    assert objects
    assert schema_errors(objects, version) == []


def test_optional_parts_validate_too(render_with: Any) -> None:
    """Metrics with scrapers and the invoker on EKS: off by default, valid when on (the api role too)."""
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    overrides = {"roles": {"api": {"enabled": True}, "invoker": {"enabled": True}},
                 "metrics": {"enabled": True, "scrapers": [scraper]}}
    for name in ("kind", "eks"):
        _, objects = render_with(name, overrides)
        assert "trace-api" in of_kind(objects, "Deployment")
        assert schema_errors(objects, KUBERNETES_VERSIONS[-1]) == []


def test_schema_validation_catches_bad_objects(rendered: Rendered) -> None:
    _, objects = rendered
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {"port": 1}
    policy = copy.deepcopy(next(o for o in objects if o["kind"] == "NetworkPolicy"))
    policy["spec"]["policyTypes"] = "Egress"
    errors = schema_errors([deployment, policy], KUBERNETES_VERSIONS[0])
    assert len(errors) == 2, errors


def test_each_role_has_deployment_service_serviceaccount_pdb(rendered: Rendered) -> None:
    values, objects = rendered
    kinds = {k: of_kind(objects, k) for k in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget")}
    for role in ROLES:
        name = f"trace-{role}"
        for kind, found in kinds.items():
            assert (name in found) == values["roles"][role]["enabled"], (kind, role)
    for name, svc in kinds["Service"].items():
        assert svc["spec"]["ports"][0]["targetPort"] == "grpc", name
        pod_labels = kinds["Deployment"][name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_workloads_have_probes_limits_serviceaccount_and_no_root(rendered: Rendered) -> None:
    values, objects = rendered
    accounts = of_kind(objects, "ServiceAccount")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "Job")]
    assert len(workloads) == len(enabled_roles(values)) + 1  # + the migration Job
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        name = w["metadata"]["name"]
        assert pod["serviceAccountName"] in accounts, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), (name, part)
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            if w["kind"] == "Deployment":
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    # The plaintext health-only port: Kubernetes' gRPC probes speak no TLS.
                    assert c[probe]["grpc"]["port"] == values["healthPort"], (name, probe)
                assert c["command"] == [f"trace-{w['metadata']['labels']['app.kubernetes.io/component']}"]


def test_eks_pods_keep_the_runtime_default_seccomp_profile(rendered_sets: dict[str, Rendered]) -> None:
    """Only kind loosens seccomp (for bubblewrap); on EKS UDFs run in Lambda."""
    _, objects = rendered_sets["eks"]
    for w in (o for o in objects if o["kind"] in ("Deployment", "Job")):
        assert w["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_role_addresses_only_for_enabled_roles(rendered_sets: dict[str, Rendered]) -> None:
    """On EKS the invoker is off: the worker must not be pointed at it (it invokes Lambda)."""
    for name, (values, objects) in rendered_sets.items():
        data = of_kind(objects, "ConfigMap")["trace-config"]["data"]
        for role, var in (("dispatcher", "TRACE_DISPATCHER_ADDR"), ("query", "TRACE_QUERY_ADDR"),
                          ("invoker", "TRACE_INVOKER_ADDR")):
            if values["roles"][role]["enabled"]:
                assert data[var] == f"trace-{role}.trace.svc:{values['grpcPort']}", (name, var)
            else:
                assert var not in data, (name, var)


def test_autoscalers_for_query_and_worker(rendered: Rendered) -> None:
    _, objects = rendered
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {"trace-query", "trace-worker"}
    deployments = of_kind(objects, "Deployment")
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in deployments[name]["spec"]  # the HPA owns the count


def test_eks_service_accounts_carry_irsa_roles(rendered_sets: dict[str, Rendered]) -> None:
    _, objects = rendered_sets["eks"]
    accounts = of_kind(objects, "ServiceAccount")
    for role in ("dispatcher", "query", "sink", "worker"):
        arn = accounts[f"trace-{role}"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert arn.startswith("arn:aws:iam::") and arn.endswith(f"role/trace-{role}")
    # Delivery calls no AWS API: no role at all.
    assert "annotations" not in accounts["trace-delivery"]["metadata"]


def test_no_secret_is_rendered(rendered: Rendered) -> None:
    """Secrets are referenced by name only: no Secret objects, no secret-looking settings."""
    _, objects = rendered
    assert of_kind(objects, "Secret") == {}
    for cm in of_kind(objects, "ConfigMap").values():
        leaked = [k for k in cm.get("data", {}) if SECRET_NAME.search(k)]
        assert leaked == [], leaked
    for w in (o for o in objects if o["kind"] in ("Deployment", "Job")):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                assert not SECRET_NAME.search(env["name"]) or "value" not in env, env["name"]
            refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            assert all(refs), w["metadata"]["name"]


def test_query_gets_only_its_own_secret(rendered: Rendered) -> None:
    """The Query Service's credentials are its own (read-only database role), not the platform's."""
    _, objects = rendered
    query = of_kind(objects, "Deployment")["trace-query"]
    refs = [e["secretRef"]["name"] for e in query["spec"]["template"]["spec"]["containers"][0]["envFrom"]
            if "secretRef" in e]
    assert refs == ["trace-query"]


def test_helm_lint_is_clean(rendered: Rendered) -> None:
    import helm_python

    values, _ = rendered
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSIONS[0]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_every_role_serves_and_dials_mutual_tls_from_the_mounted_secret(rendered_sets: dict[str, Rendered]) -> None:
    for name, (values, objects) in rendered_sets.items():
        data = of_kind(objects, "ConfigMap")["trace-config"]["data"]
        mounted = "/var/run/trace/tls"
        for var in ("TRACE_TLS_CERT_FILE", "TRACE_TLS_KEY_FILE", "TRACE_TLS_CA_FILE", "TRACE_TLS_CLIENT_CA_FILE",
                    "TRACE_TLS_CLIENT_CERT_FILE", "TRACE_TLS_CLIENT_KEY_FILE"):
            assert data[var].startswith(mounted + "/"), (name, var)
        assert "TRACE_TLS_ALLOW_PLAINTEXT" not in data
        assert data["TRACE_HEALTH_LISTEN"] == f"0.0.0.0:{values['healthPort']}"
        for deployment in of_kind(objects, "Deployment").values():
            pod = deployment["spec"]["template"]["spec"]
            volume = next(v for v in pod["volumes"] if v["name"] == "tls")
            assert volume["secret"]["secretName"] == values["tls"]["existingSecret"]
            mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
            assert mounts["tls"]["mountPath"] == mounted and mounts["tls"]["readOnly"] is True


def test_plaintext_is_an_explicit_choice(render_with: Any) -> None:
    _, objects = render_with("kind", {"tls": {"enabled": False}})
    data = of_kind(objects, "ConfigMap")["trace-config"]["data"]
    assert data["TRACE_TLS_ALLOW_PLAINTEXT"] == "1"
    assert not any(k.startswith("TRACE_TLS_") and k != "TRACE_TLS_ALLOW_PLAINTEXT" for k in data)
    for deployment in of_kind(objects, "Deployment").values():
        assert all(v["name"] != "tls" for v in deployment["spec"]["template"]["spec"]["volumes"])


def test_the_query_service_checks_its_storage_endpoint_against_the_policy_allowlist(
    rendered_sets: dict[str, Rendered],
) -> None:
    """TRACE_QUERY_EGRESS_ALLOW is the object store allowlist of the NetworkPolicy, set on the
    query role only, and the configured storage endpoint passes it (else the pod would not start)."""
    from urllib.parse import urlsplit

    from trace_platform.servers.query.egress import allowed

    for name, (values, objects) in rendered_sets.items():
        store = values["network"]["objectStore"]
        deployments = of_kind(objects, "Deployment")
        allow = tuple(_env(deployments["trace-query"])["TRACE_QUERY_EGRESS_ALLOW"].split(","))
        assert set(allow) == {*store["cidrs"], *store["hosts"]}, name
        for other, deployment in deployments.items():
            assert other == "trace-query" or "TRACE_QUERY_EGRESS_ALLOW" not in _env(deployment), other
        endpoint = values["config"].get("TRACE_S3_ENDPOINT_URL") or f"https://s3.{values['config']['AWS_REGION']}.amazonaws.com"
        assert allowed(urlsplit(endpoint).hostname or "", allow), name


def test_user_roles_verify_the_identity_providers_jwks(rendered_sets: dict[str, Rendered]) -> None:
    """api and query get the JWKS mounted and TRACE_USER_AUTH_JWKS_PATH; no HS256 secret."""
    for name, (values, objects) in rendered_sets.items():
        for role, deployment in of_kind(objects, "Deployment").items():
            env = _env(deployment)
            pod = deployment["spec"]["template"]["spec"]
            has_jwks = any(v["name"] == "user-jwks" for v in pod["volumes"])
            if role in ("trace-api", "trace-query"):
                assert env["TRACE_USER_AUTH_JWKS_PATH"] == "/etc/trace/user-jwks/jwks.json", (name, role)
                volume = next(v for v in pod["volumes"] if v["name"] == "user-jwks")
                assert volume["configMap"]["name"] == values["userAuth"]["jwksConfigMap"]
            else:
                assert "TRACE_USER_AUTH_JWKS_PATH" not in env and not has_jwks, (name, role)
            assert not any("HS256" in k or "JWT_SECRET" in k for k in env), (name, role)
