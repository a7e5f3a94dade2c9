"""The SDK's public surface (issue 11, item 5): every public RPC has a client method,
the public names are pinned (a rename or removal fails here), and no protobuf type
appears in a method's signature or in a result dataclass."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from typing import Any

import pyarrow
from google.protobuf.message import Message

import trace_platform
from tests.api_support import public_rpcs
from trace_platform.clients.api.connect import AsyncTraceClient, TraceClient

# Every RPC of trace.api.v1 and the client method that calls it.
RPC_METHODS = {
    "trace.api.v1.DatasetService/ListDatasets": "datasets.list",
    "trace.api.v1.DatasetService/GetDataset": "datasets.get",
    "trace.api.v1.DatasetService/PublishDataset": "datasets.publish",
    "trace.api.v1.DagService/DeployDag": "dags.deploy",
    "trace.api.v1.DagService/GetDag": "dags.get",
    "trace.api.v1.DagService/ListDagVersions": "dags.list_versions",
    "trace.api.v1.DagService/ActivateDagVersion": "dags.activate",
    "trace.api.v1.DagService/RollbackDag": "dags.rollback",
    "trace.api.v1.BundleService/UploadBundle": "bundles.upload",
    "trace.api.v1.BundleService/CreateBundleUpload": "bundles.create_upload",
    "trace.api.v1.BundleService/FinalizeBundle": "bundles.finalize",
    "trace.api.v1.BundleService/GetBundle": "bundles.get",
    "trace.api.v1.BundleService/ListBundles": "bundles.list",
    "trace.api.v1.AlertService/CreateAlert": "alerts.create",
    "trace.api.v1.AlertService/ListAlerts": "alerts.list",
    "trace.api.v1.AlertService/GetAlert": "alerts.get",
    "trace.api.v1.AlertService/UpdateAlert": "alerts.update",
    "trace.api.v1.AlertService/DisableAlert": "alerts.disable",
    "trace.api.v1.AlertService/ListAlertEvents": "alerts.events",
    "trace.api.v1.AlertService/ListAlertDeliveries": "alerts.deliveries",
    "trace.api.v1.QueryService/Query": "query.query",
    "trace.api.v1.QueryService/QueryArrow": "query.query_arrow",
}

# The public names of each service client: adding one is a decision, so is removing one.
PUBLIC_NAMES = {
    "datasets": {"list", "iterate", "get", "publish"},
    "dags": {"deploy", "get", "list_versions", "iterate_versions", "activate", "rollback"},
    "bundles": {"upload", "upload_stream", "create_upload", "finalize", "get", "list", "iterate"},
    "alerts": {"create", "list", "iterate", "get", "update", "disable", "events", "iterate_events",
               "deliveries", "iterate_deliveries"},
    "query": {"query", "query_arrow", "query_arrow_batches"},
}


def service_classes() -> dict[str, type]:
    source = inspect.getsource(AsyncTraceClient.__init__)
    classes: dict[str, type] = {}
    module = importlib.import_module(AsyncTraceClient.__module__)
    for name in PUBLIC_NAMES:
        line = next(line for line in source.splitlines() if f"self.{name} = " in line)
        cls_name = line.split("=", 1)[1].strip().split("(", 1)[0]
        classes[name] = getattr(module, cls_name)
    return classes


def test_every_public_rpc_has_a_client_method() -> None:
    missing = public_rpcs() - RPC_METHODS.keys()
    assert not missing, f"public RPCs without a client method: {sorted(missing)}"
    assert not RPC_METHODS.keys() - public_rpcs(), "a mapped RPC no longer exists"
    classes = service_classes()
    for rpc, path in RPC_METHODS.items():
        service, method = path.split(".")
        assert callable(getattr(classes[service], method, None)), f"{rpc}: no {path}"


def test_the_public_names_are_pinned() -> None:
    for service, cls in service_classes().items():
        names = {n for n, _ in inspect.getmembers(cls, callable) if not n.startswith("_")}
        assert names == PUBLIC_NAMES[service], service
    assert set(trace_platform.__all__) == {"__version__", "connect", "aconnect"}
    assert callable(trace_platform.connect) and callable(trace_platform.aconnect)
    sync_names = {n for n in vars(TraceClient) if not n.startswith("_")}
    assert sync_names == {"close"}  # the services are instance attributes, as on the async client


def _types_in(hint: Any, seen: set[Any]) -> list[type]:
    """Every class a type hint names, through unions, generics and dataclass fields."""
    if hint in seen:
        return []
    seen.add(hint)
    out: list[type] = []
    for arg in typing.get_args(hint):
        out += _types_in(arg, seen)
    origin = typing.get_origin(hint)
    if origin is not None:
        return out
    if isinstance(hint, type):
        out.append(hint)
        if dataclasses.is_dataclass(hint):
            for f in dataclasses.fields(hint):
                out += _types_in(typing.get_type_hints(hint).get(f.name), seen)
    return out


def test_no_protobuf_type_in_the_public_surface() -> None:
    for service, cls in service_classes().items():
        for name in PUBLIC_NAMES[service]:
            # Names some clients import only for type checking (pyarrow is heavy).
            hints = typing.get_type_hints(getattr(cls, name), localns={"pa": pyarrow})
            for hint in hints.values():
                for t in _types_in(hint, set()):
                    assert not _is_protobuf(t), f"{service}.{name} exposes {t.__module__}.{t.__qualname__}"


def _is_protobuf(t: type) -> bool:
    # Generated classes report their proto package as module (trace.api.v1.x_pb2).
    return issubclass(t, Message) or t.__module__.startswith(("trace.", "trace_platform.gen", "google.protobuf"))


def test_the_protobuf_check_sees_generated_types() -> None:
    from trace_platform.gen.trace.api.v1 import bundles_pb2

    assert any(_is_protobuf(t) for t in _types_in(bundles_pb2.BundleUploadHeader | None, set()))
    assert not any(_is_protobuf(t) for t in _types_in(str | None, set()))
