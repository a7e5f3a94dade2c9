"""The public API's messages name their time points one way (AIP-142): ``*_time``.

A user reading ``create_time`` on a DAG and ``created_at`` on an alert has to learn both;
this walks every message of ``trace.api.v1`` so a new field cannot bring the other form back.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from trace_platform.gen.trace.api.v1 import alerts_pb2, bundles_pb2, dags_pb2, datasets_pb2, query_pb2

API_MODULES = (alerts_pb2, bundles_pb2, dags_pb2, datasets_pb2, query_pb2)


def _messages(desc: Descriptor) -> Iterator[Descriptor]:
    yield desc
    for nested in desc.nested_types:
        yield from _messages(nested)


def _timestamp_fields() -> list[FieldDescriptor]:
    fields = []
    for module in API_MODULES:
        for top in module.DESCRIPTOR.message_types_by_name.values():
            for message in _messages(top):
                fields += [
                    f
                    for f in message.fields
                    if f.message_type is not None and f.message_type.full_name == "google.protobuf.Timestamp"
                ]
    return fields


def test_every_api_time_point_ends_in_time() -> None:
    fields = _timestamp_fields()
    assert len(fields) >= 10  # the walk reaches the messages (alerts, deliveries, datasets, bundles, dags)
    wrong = [f.full_name for f in fields if not f.name.endswith("_time")]
    assert wrong == []
