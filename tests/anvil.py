"""The anvil node the tests start: the same helper the Lite demo uses."""

from trace_platform.lite.anvil import EMITTER_TOPIC, AnvilNode, free_port

__all__ = ["EMITTER_TOPIC", "AnvilNode", "free_port"]
