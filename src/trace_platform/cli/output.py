"""The CLI's printing conventions live in ``trace_platform.views.output`` (shared with
Lite, which does not import the CLI); these names stay importable from here."""

from __future__ import annotations

from trace_platform.views.output import BatchWriter, cell, dumps, hex0x, json_default, message_dict

__all__ = ["BatchWriter", "cell", "dumps", "hex0x", "json_default", "message_dict"]
