"""The typed SDK of the public API (``trace.api.v1``): one async client per service,
assembled by ``trace_platform.connect`` (sync) and ``trace_platform.aconnect`` (async).
Results are frozen dataclasses and errors the typed ``core.errors`` classes: no protobuf
type appears in the public surface."""
