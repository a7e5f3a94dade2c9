#!/bin/sh
# One entrypoint per role: the image links trace-<role> to this script, which serves that
# role alone (`trace serve ROLE`) on TRACE_LISTEN. Called as trace-entrypoint, the role is
# the first argument. Unknown roles are refused (exit 64).
set -eu
name="$(basename "$0")"
if [ "$name" = "trace-entrypoint" ]; then
  role="${1:-}"
  [ "$#" -gt 0 ] && shift
else
  role="${name#trace-}"
fi
case "$role" in
  dispatcher|query|sink|delivery|invoker|worker|api) ;;
  *) echo "trace-entrypoint: unknown role '$role' (dispatcher|query|sink|delivery|invoker|worker|api)" >&2; exit 64 ;;
esac
exec trace serve "$role" --listen "${TRACE_LISTEN:-0.0.0.0:50051}" "$@"
