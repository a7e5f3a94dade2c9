"""Where the platform is started from, kept for its callers (tests, ``trace lite up``):
the Lite composition lives in ``trace_platform.lite.platform``, each role's root in
``trace_platform.roles``, and the host that runs any set of roles in
``trace_platform.roles.host``."""

from __future__ import annotations

from trace_platform.lite.platform import RunningPlatform, start_platform

__all__ = ["RunningPlatform", "start_platform"]
